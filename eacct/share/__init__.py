"""Friends, shares, the recipient's cloud share and the message center. Registers its netdisk hooks (ledger
deletion ends shares, the recipient refusal) in `service.register`; `access` holds the owner/recipient rule."""
