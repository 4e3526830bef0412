"""The chunk format shared by the server and the desktop client: pure code, no database, no HTTP.

`chunker` cuts a year archive where its data changes (tar members apart, database files at page boundaries,
FastCDC otherwise); `manifest` encodes a version's chunk list; `delta` is the wire format of a delta upload.
Nothing here imports the rest of eacct, so `eacct.desktop_sync` can use it without loading the server.
"""
