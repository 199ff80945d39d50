"""Model stores: where the one verified copy of each model revision lives.

Two backends, one layout::

    <root>/<model>/<revision>/<files...>         the model's files
    <root>/<model>/<revision>/manifest.json      per-file sha256 and size, written LAST
    <root>/<model>/<revision>/golden.json        optional: the reference's golden output (golden.py)
    <root>/<model>/.lock                         the writer lock (owner, host, pid, lease; locks.py)

``<root>`` is a directory (a shared mount such as FSx for Lustre, EFS or NFS on a fleet; a local
directory here; fs_store.py), written as a plain path or ``file:///path``, or an S3 prefix
``s3://bucket/prefix`` (s3_store.py). A revision exists exactly when its manifest does. Publishing
uploads every file first and the manifest last, in one atomic step (a rename on a filesystem, a single
PUT on S3), so a reader never sees a partial model.

This module holds what the backends share: the ``Store`` and ``Upload`` interfaces and ``open_store``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from llmfleet.errors import WeightsError
from llmfleet.weights.locks import DEFAULT_LEASE_SECONDS, Lock

if TYPE_CHECKING:
    from llmfleet.weights.fs_store import MappedFile


class Upload:
    """One revision being published: files first, then ``commit`` writes the manifest last."""

    def put_file(
        self, rel: str, src: Path, move: bool, on_bytes: Callable[[int], None] | None
    ) -> tuple[str, int]:
        raise NotImplementedError

    def commit(self, manifest: dict[str, Any]) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class Store:
    """What staging and publishing need from a backend."""

    url: str

    def location(self, model: str, revision: str, rel: str = "") -> str:
        raise NotImplementedError

    def manifest(self, model: str, revision: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def read_range(self, model: str, revision: str, rel: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def read_range_into(self, model: str, revision: str, rel: str, offset: int, buf: memoryview) -> int:
        """Read into ``buf`` from ``offset``; the byte count (short only at the end of the file)."""
        data = self.read_range(model, revision, rel, offset, len(buf))
        buf[: len(data)] = data
        return len(data)

    @contextlib.contextmanager
    def reader(self, model: str, revision: str, rel: str) -> Iterator[Callable[[int, memoryview], int]]:
        """``read_range_into`` for one file, for many chunks of it (a backend may keep it open)."""
        yield lambda offset, buf: self.read_range_into(model, revision, rel, offset, buf)

    def local(self, model: str, revision: str) -> bool:
        """Whether the revision is on this host's own disks (a local read pays no round trip)."""
        return False

    def can_map(self) -> bool:
        """Whether ``mapped`` gives files: only a filesystem store's files can be memory-mapped."""
        return False

    def mapped(self, model: str, revision: str, rel: str) -> MappedFile:
        """The file, to be mapped for one sequential pass (only where ``can_map``)."""
        raise NotImplementedError

    def lock(self, model: str, owner: str, lease: float = DEFAULT_LEASE_SECONDS) -> Lock:
        raise NotImplementedError

    def begin(self, model: str, revision: str) -> Upload:
        raise NotImplementedError

    def read_sidecar(self, model: str, revision: str, name: str) -> bytes | None:
        """A sidecar file of a revision (``SIDECARS``), None when there is none."""
        raise NotImplementedError

    def write_sidecar(self, model: str, revision: str, name: str, data: bytes) -> None:
        """Write a sidecar in one atomic step; the revision must exist (its manifest)."""
        raise NotImplementedError

    def clean_leftovers(self, model: str) -> None:
        """Remove what a crashed writer left; called with the model's lock held."""

    @contextlib.contextmanager
    def scratch_dir(self, model: str) -> Iterator[Path]:
        """A local directory to build a revision in before publishing it."""
        with tempfile.TemporaryDirectory(prefix=f"llmfleet-{model}.") as tmp:
            yield Path(tmp)


def open_store(url: str | Path) -> Store:
    """``s3://bucket/prefix`` -> S3Store; ``file:///path`` or a plain path -> FsStore."""
    from llmfleet.weights.fs_store import FsStore
    from llmfleet.weights.s3_store import S3Store, parse_s3_uri

    text = str(url)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_uri(text)
        return S3Store(bucket, prefix)
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise WeightsError(f"{text!r}: a file:// store must be local (file:///path)")
        return FsStore(Path(parsed.path))
    if "://" in text:
        raise WeightsError(
            f"{text!r}: unknown store scheme; use a directory, file:///path or s3://bucket/prefix"
        )
    return FsStore(Path(text))
