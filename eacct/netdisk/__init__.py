"""The netdisk: opening it, its password, quota and the owner's backups. `service` (netdisk rules, ledger ids and
fiscal years), `versions` (version rules: owner lock, If-Match, cap, retention, quota), `store/` (mechanics only),
`hooks` (how share plugs in); imports no share, wechat or desktop_sync."""
