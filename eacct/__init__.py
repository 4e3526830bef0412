"""eacct: the e会计 cloud backup and share service. The packages are layered (README "Layout"): `chunks` and
`storage` at the bottom, then `members`, `netdisk`, `share`, `wechat`; `app`, `providers` and `cli` wire them."""
