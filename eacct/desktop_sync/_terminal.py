"""What `eacct-sync` keeps and shows: the session file in EACCT_SYNC_HOME (0600), tables that line up Chinese,
--json output and the progress bar."""

from __future__ import annotations

import json
import os
import sys
import unicodedata
import uuid
from pathlib import Path
from typing import Any

__all__ = ["Output", "ProgressBar", "State", "default_home", "mb", "table"]


# ------------------------------------------------------------------------------------------- state


def default_home() -> Path:
    """The per-user folder for eacct-sync's state."""
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "eacct-sync"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "eacct-sync"


class State:
    """The session file in EACCT_SYNC_HOME: server, member, session token, netdisk token (0600)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "session.json"
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                self.data = {}  # a damaged file is as good as none: log in again

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = self.home / f".session.{uuid.uuid4().hex}"
        try:
            # Created 0600 from the start: the tokens are never readable by others, not even for a moment.
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.data, handle, ensure_ascii=False)
            os.chmod(staged, 0o600)
            os.replace(staged, self.path)
        finally:
            if staged.exists():
                staged.unlink()

    def clear(self) -> None:
        self.data = {}
        if self.path.exists():
            self.path.unlink()


# ------------------------------------------------------------------------------------------- output


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table that lines up Chinese too."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def mb(size: Any) -> str:
    return f"{int(size or 0) / 1024 / 1024:.2f}MB"


class Output:
    """Human lines on stdout, or a single JSON object as the last line with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def say(self, text: str) -> None:
        if not self.as_json:
            print(text)

    def result(self, data: dict, human: str | None = None) -> None:
        if self.as_json:
            print(json.dumps(data, ensure_ascii=False))
        elif human:
            print(human)


class ProgressBar:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = ""

    def __call__(self, done: int, total: int, phase: str) -> None:
        if not self.enabled:
            return
        names = {"packing": "打包", "hashing": "校验", "sending": "上传", "receiving": "下载", "verifying": "核对"}
        share = done / total if total else 1.0
        line = f"\r{names.get(phase, phase)} [{'#' * int(share * 30):<30}] {share:6.1%} {mb(done)}"
        if line != self.last:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.last = line

    def done(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")
