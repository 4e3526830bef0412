"""Settings, read once from the environment (`EACCT_*`) into a typed object and passed to whoever needs them."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Settings"]

DEFAULT_DATA_DIR = Path("./eacct-data")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be configured with; defaults run with no setup at all."""

    database_url: str = f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/eacct.db"
    # PostgreSQL only: keep every table in this schema (several deployments or test runs on one database).
    database_schema: str = ""
    storage_url: str = f"file://{DEFAULT_DATA_DIR}/blobs"
    oss_access_key_id: str = field(default="", repr=False)
    oss_access_key_secret: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    # Load balancers / reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs).
    trusted_proxies: str = ""
    netdisk_quota_bytes: int = 400 * 1024 * 1024
    # How many versions of one (ledger, year) are kept, and how many versions one member may hold in all.
    versions_kept_per_year: int = 10
    max_versions_per_member: int = 100
    # argon2id cost; tests lower it to stay fast, production keeps the library's recommended values.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    session_ttl_seconds: int = 30 * 24 * 3600
    netdisk_token_idle_seconds: int = 30 * 60
    # Wrong netdisk passwords / answers in a row before a lockout, and the first lockout's length;
    # each further failure while locked doubles it, up to the cap.
    lockout_after_failures: int = 5
    lockout_base_seconds: int = 60
    lockout_max_seconds: int = 24 * 3600
    # Add-friend attempts allowed per member in one window (stops account probing).
    friend_attempts_per_window: int = 10
    friend_attempt_window_seconds: int = 600
    pack_target_bytes: int = 8 * 1024 * 1024
    # Blobs no pack row names (and pending packs from before upload leases) younger than this are left by gc.
    gc_grace_seconds: int = 6 * 3600
    wechat_appid: str = ""
    wechat_secret: str = field(default="", repr=False)
    wechat_token: str = field(default="", repr=False)
    wechat_aes_key: str = field(default="", repr=False)
    wechat_api_base: str = "https://api.weixin.qq.com"
    # Template of the WeChat template messages (模板消息) that tell bound members their personal messages;
    # the channel is on only with appid, secret and this set.
    wechat_template_id: str = ""
    # An upload body that sends no byte for this many seconds is refused (408 upload_stalled), nothing kept.
    upload_idle_timeout: int = 60
    # A running upload refreshes its lease (UploadLease) a few times per this period; gc reclaims the pending
    # data of an upload whose lease has not been refreshed for this long (its process is gone).
    upload_lease_seconds: int = 120
    # Server processes `eacct serve` runs on one port (`--workers`); each has its own database pool.
    workers: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read `EACCT_*` variables; unknown ones are ignored, malformed numbers raise ValueError."""
        env = os.environ if environ is None else environ
        defaults = cls()
        values: dict[str, object] = {}
        for name in cls.__dataclass_fields__:
            raw = env.get(f"EACCT_{name.upper()}")
            if raw is None:
                continue
            if isinstance(getattr(defaults, name), int):
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"EACCT_{name.upper()} must be a whole number, not {raw!r}") from None
            else:
                values[name] = raw
        return replace(defaults, **values)

    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """`trusted_proxies` parsed; a malformed entry raises ValueError."""
        return [ipaddress.ip_network(part.strip(), strict=False) for part in self.trusted_proxies.split(",") if part.strip()]

    def with_overrides(self, **changes: object) -> "Settings":
        """A copy with some fields changed (tests, CLI flags)."""
        return replace(self, **changes)
