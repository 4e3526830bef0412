"""The content-addressed ledger store: chunk, deduplicate, pack, index, read back, release, collect garbage.

A version is a manifest of chunks in file order (sha256 digest + raw size each). A chunk is stored once per
owner, zstd-compressed, appended to a pack blob of a few MiB; the `chunks` table says where it lives and how
many versions use it. Quota is the sum of the raw sizes of an owner's chunks in use.

An upload streams: bytes are hashed, cut by the format-aware chunker, looked up, and only new chunks are
compressed into a spooled pack, which is put to the blob store (registered first as *pending*) whenever it
is full. Nothing is visible until one final transaction inserts the version and its manifest, checks the upload's
chunk rows, counts references on the chunks it found stored and marks the packs committed, with the netdisk
service's rules (`CommitRules`: the owner's lock, access, expected version, version cap, retention, quota) run
inside it. The store knows none of those rules.

Failure rules. A blob is deleted only after the row that allowed it is gone in a committed transaction: a
failed upload deletes its pending rows first (`committed = false`), then the blobs of the rows it really
deleted. If the commit was sent and its outcome is unknown (connection lost during COMMIT, cancellation),
nothing is deleted: gc decides later from what the database says. Every upload that writes anything holds a
lease (`UploadLease`) whose heartbeat it refreshes while alive; gc reclaims the pending packs and spool files
of a lease that has lapsed (its process is gone), within `upload_lease_seconds`, and never a live one's.

Modules: `upload` (the pipeline and leases), `spool` (spool files), `deltas` (delta bodies), `index` (the commit
and reference counts), `read` (downloads), `gc` (garbage collection), `common` (shared constants and helpers).
"""

from eacct.netdisk.store.common import WAITING_BYTES, pack_blob_key, stored_chunks, used_bytes
from eacct.netdisk.store.gc import collect_garbage, reclaim_abandoned_uploads
from eacct.netdisk.store.index import CommitRules, commit, release_versions
from eacct.netdisk.store.read import MANIFEST_ENTRIES, read_entries, read_version
from eacct.netdisk.store.upload import IncomingVersion, Upload, receive_version

__all__ = [
    "MANIFEST_ENTRIES", "WAITING_BYTES", "CommitRules", "IncomingVersion", "Upload", "collect_garbage", "commit",
    "pack_blob_key", "read_entries", "read_version", "receive_version", "reclaim_abandoned_uploads", "release_versions", "stored_chunks",
    "used_bytes",
]
