"""What a weights operation tells people: a progress line while it works, its ``Outcome`` at the end."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class Outcome:
    """What an operation did, for Ansible's ``changed_when`` and for people."""

    changed: bool
    path: str
    detail: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps({**self.extra, "changed": self.changed, "path": self.path, "detail": self.detail})


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, a line every few percent otherwise.

    Thread-safe; call it with the number of bytes just done. Silent unless ``enabled``.
    """

    def __init__(self, label: str, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total  # 0: unknown, only bytes and rate are shown
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._tty = enabled and self.stream.isatty()
        self._shown = -1.0
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            if not self.enabled:
                return
            now = time.monotonic()
            finished = self.total > 0 and self.done >= self.total
            # Terminal: redraw at most 5 times a second. Log: a line every 5% (every 256 MiB if unknown).
            step = 100.0 * self.done / self.total if self.total else self.done / 2**28
            if self._tty and now - self._shown < 0.2 and not finished:
                return
            if not self._tty and step - self._shown < (5 if self.total else 1) and not finished:
                return
            self._shown = now if self._tty else step
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6) / 2**20
        if self.total:
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            pct = 100.0 * self.done / self.total
            line = (
                f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% "
                f"{self.done / 2**20:,.0f}/{self.total / 2**20:,.0f} MiB {rate:,.1f} MiB/s"
            )
        else:
            line = f"{self.label} {self.done / 2**20:,.0f} MiB {rate:,.1f} MiB/s"
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()


def progress_wanted(flag: bool, stream: TextIO | None = None) -> bool:
    """Progress goes to stderr when asked for, or when stderr is a terminal (never into stdout's JSON)."""
    stream = stream or sys.stderr
    return flag or stream.isatty()
