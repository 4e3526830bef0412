"""Members: accounts, sessions and tokens. `service` holds the rules (no HTTP), `api` the thin handlers; imports
no other area."""
