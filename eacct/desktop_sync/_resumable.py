"""Resumable upload of a year through an upload session: the chunks the cloud lacks go in batches, each durable
on the server once answered; after a broken connection the next upload of the same year asks the session what
it holds and sends only the rest, then commits the manifest (the server verifies the whole-file sha256).

The open session is remembered in `<root>/.eacct-partial/<ledger>-<year>.upload.json` (its id, side and the
archive's sha256); a session that expired, or one of another archive, is simply replaced by a new one.
"""

from __future__ import annotations

import json
from pathlib import Path

from eacct.chunks.manifest import ENTRY, encode_manifest
from eacct.desktop_sync._client import Progress, Request, Response, _NOT_JSON, _no_progress, _parse_json
from eacct.desktop_sync._exceptions import NotFoundError, ProtocolError, error_for

__all__ = ["BATCH_BYTES", "SESSION_MIN_BYTES", "ResumableUpload"]

# Below this many new bytes the one-request (delta) upload is used: a session costs three more round trips.
SESSION_MIN_BYTES = 4 * 1024 * 1024
BATCH_BYTES = 8 * 1024 * 1024  # a broken connection costs at most one batch


class ResumableUpload:
    """One year's upload session on one side; `pending` says whether an earlier one may be resumed."""

    def __init__(self, client, side: str, ledger_id: str, year: int, partials: Path) -> None:
        self.client, self.side, self.ledger_id, self.year = client, side, ledger_id, year
        self.state_file = partials / f"{ledger_id}-{year}.upload.json"
        self.base = f"/{side}/{ledger_id}/years/{year}/uploads"

    def _saved(self, claim: dict) -> str | None:
        try:
            saved = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # Resumed only for the very same archive and claims (remark, base version, …) on the same side.
        if isinstance(saved, dict) and saved.get("claim") == claim and saved.get("side") == self.side:
            return str(saved.get("upload_id", "")) or None
        return None

    def _claim(self, size: int, sha256: str, remark: str, ledger_name: str | None, if_match: str | None) -> dict:
        claim = {"size": size, "sha256": sha256, "remark": remark, "client_version": self.client.client_version}
        if ledger_name:
            claim["ledger_name"] = ledger_name
        if if_match:
            claim["if_match"] = if_match
        return claim

    def pending(self, archive: Path, sha256: str, remark: str = "", ledger_name: str | None = None,
                if_match: str | None = None) -> bool:
        """Whether an unfinished session of this very archive and claims is remembered."""
        return self._saved(self._claim(archive.stat().st_size, sha256, remark, ledger_name, if_match)) is not None

    async def _open(self, size: int, sha256: str, remark: str, ledger_name: str | None, if_match: str | None) -> tuple[str, set[str]]:
        claim = self._claim(size, sha256, remark, ledger_name, if_match)
        upload_id = self._saved(claim)
        if upload_id is not None:
            try:
                state = await self.client._call("GET", f"{self.base}/{upload_id}", netdisk=True)
                return upload_id, set(state["held"])
            except NotFoundError:
                pass  # expired or committed meanwhile: start again
        state = await self.client._call("POST", self.base, netdisk=True, body=claim)
        self.state_file.parent.mkdir(exist_ok=True)
        self.state_file.write_text(json.dumps({"upload_id": state["upload_id"], "side": self.side, "claim": claim}),
                                   encoding="utf-8")
        return state["upload_id"], set()

    async def run(self, archive: Path, sha256: str, manifest: list[tuple[bytes, int]], missing: set[str], *,
                  remark: str = "", ledger_name: str | None = None, if_match: str | None = None,
                  progress: Progress = _no_progress) -> dict:
        """Send the chunks in `missing` (hex) the session does not hold yet, then commit; the new Version."""
        size = archive.stat().st_size
        upload_id, held = await self._open(size, sha256, remark, ledger_name, if_match)
        offsets: dict[bytes, tuple[int, int]] = {}
        position = 0
        for digest, chunk_size in manifest:
            offsets.setdefault(digest, (position, chunk_size))
            position += chunk_size
        to_send = [digest for digest in offsets if digest.hex() in missing and digest.hex() not in held]
        total = sum(offsets[digest][1] for digest in to_send)
        done = 0
        with open(archive, "rb") as source:
            batch: list[bytes] = []
            batch_bytes = 0
            for index, digest in enumerate(to_send):
                offset, chunk_size = offsets[digest]
                source.seek(offset)
                batch.append(ENTRY.pack(digest, chunk_size) + source.read(chunk_size))
                batch_bytes += chunk_size
                if batch_bytes < BATCH_BYTES and index + 1 < len(to_send):
                    continue
                await self._send(f"{self.base}/{upload_id}/chunks", "PUT", b"".join(batch))
                done += batch_bytes
                progress(done, total, "sending")
                batch, batch_bytes = [], 0
        version = await self._send(f"{self.base}/{upload_id}/commit", "POST", encode_manifest(manifest))
        self.state_file.unlink(missing_ok=True)
        try:
            self.state_file.parent.rmdir()  # only when empty: a kept download may live there too
        except OSError:
            pass
        return version

    async def _send(self, path: str, method: str, content: bytes) -> dict:
        headers = {**self.client._headers(True), "Content-Type": "application/octet-stream"}
        self.client.bytes_sent += len(content)

        async def receive(response: Response) -> dict:
            raw = await response.read()
            self.client.bytes_received += len(raw)
            data = _parse_json(raw)
            if response.status >= 400:
                raise error_for(response.status, None if data is _NOT_JSON else data)
            if not isinstance(data, dict):
                raise ProtocolError(f"服务器的回答不是 e会计云服务的数据（HTTP {response.status}）")
            return data

        return await self.client.transport.send(Request(method, self.client.base_url + path, headers, content=content), receive)
