"""A filesystem store: a directory, local or a shared mount (FSx for Lustre, EFS, NFS); see store.py.

Publishing builds a revision in ``.<revision>.publish.*`` beside its place and renames it into place
with the manifest written last. Staging from it reads files with one open file per file, or maps a
file whole for one sequential pass (``MappedFile``) when the store is on this host's own disks.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmfleet.errors import WeightsError
from llmfleet.weights.locks import DEFAULT_LEASE_SECONDS, LOCK, FsLock, Lock
from llmfleet.weights.manifest import (
    MANIFEST,
    check_sidecar,
    commit_manifest,
    copy_hashing,
    parse_manifest,
    sha256_file,
    write_atomic,
)
from llmfleet.weights.mounts import LOCAL_FILESYSTEMS, filesystem_type
from llmfleet.weights.store import Store, Upload


class FsStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def location(self, model: str, revision: str, rel: str = "") -> str:
        path = self.root / model / revision
        return str(path / rel) if rel else str(path)

    def manifest(self, model: str, revision: str) -> dict[str, Any] | None:
        path = self.root / model / revision / MANIFEST
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return parse_manifest(data, str(path))

    def read_range(self, model: str, revision: str, rel: str, offset: int, length: int) -> bytes:
        fd = os.open(self.root / model / revision / rel, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def reader(self, model: str, revision: str, rel: str) -> Iterator[Callable[[int, memoryview], int]]:
        if type(self).read_range is not FsStore.read_range:
            # A subclass that reads differently (a wrapper that counts or fails reads) is read through it.
            with super().reader(model, revision, rel) as read:
                yield read
            return
        # One open file for all its chunks: on NFS or Lustre every open is a round trip to the server.
        fd = os.open(self.root / model / revision / rel, os.O_RDONLY)
        try:
            yield lambda offset, buf: _preadv_all(fd, buf, offset)
        finally:
            os.close(fd)

    def local(self, model: str, revision: str) -> bool:
        """On a filesystem of this host's own devices (``LOCAL_FILESYSTEMS``), not a network mount.

        The revision's own directory is looked up, not the root: a model or revision directory may
        be a symlink to, or a mount of, a network filesystem."""
        return filesystem_type(self.root / model / revision) in LOCAL_FILESYSTEMS

    def can_map(self) -> bool:
        # A subclass that reads differently (a wrapper that counts or fails reads) is read through it.
        return type(self).read_range is FsStore.read_range

    def mapped(self, model: str, revision: str, rel: str) -> MappedFile:
        return MappedFile(self.root / model / revision / rel)

    def lock(self, model: str, owner: str, lease: float = DEFAULT_LEASE_SECONDS) -> Lock:
        return FsLock(self.root / model / LOCK, owner, lease)

    def begin(self, model: str, revision: str) -> Upload:
        return _FsUpload(self.root / model / revision)

    def read_sidecar(self, model: str, revision: str, name: str) -> bytes | None:
        check_sidecar(name)
        try:
            return (self.root / model / revision / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_sidecar(self, model: str, revision: str, name: str, data: bytes) -> None:
        check_sidecar(name)
        directory = self.root / model / revision
        if not (directory / MANIFEST).is_file():
            raise WeightsError(f"{directory} is not a complete revision; no {name} is written beside it")
        write_atomic(directory / name, data)

    def clean_leftovers(self, model: str) -> None:
        # Under the lock no other writer is working, so these belong to one that crashed.
        parent = self.root / model
        if parent.is_dir():
            for path in parent.iterdir():
                if path.is_dir() and (path.name.startswith(".import.") or ".publish." in path.name):
                    shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def scratch_dir(self, model: str) -> Iterator[Path]:
        # Beside the final place, on the same filesystem, so publishing is a rename, not a copy.
        parent = self.root / model
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".import.", dir=parent) as tmp:
            yield Path(tmp)


class _FsUpload(Upload):
    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.publish.", dir=final.parent))

    def put_file(
        self, rel: str, src: Path, move: bool, on_bytes: Callable[[int], None] | None
    ) -> tuple[str, int]:
        target = self.tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if move and src.stat().st_dev == self.tmp.stat().st_dev:
            os.replace(src, target)
            digest, size = sha256_file(target), target.stat().st_size
            if on_bytes is not None:
                on_bytes(size)
            return digest, size
        return copy_hashing(src, target, on_bytes)

    def commit(self, manifest: dict[str, Any]) -> None:
        commit_manifest(self.tmp, manifest)
        self.tmp.chmod(0o755)
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class MappedFile:
    """A store file mapped whole, for one sequential pass.

    Why map: the bytes are written to the staged copy straight from the page cache and hashed from the
    same pages, so they are never copied into a buffer of ours (bench/staging.py: that copy, and
    the parallel reads' seeking, were what kept staging from a plain copy's speed on a local disk).
    Whole, not window by window: unmapping in a threaded process stops every core it runs on.
    The first touch of a page is the kernel's, inside ``pwrite``: a read error there is an ``OSError``
    (EFAULT), which staging reports as a ``WeightsError`` naming the file.

    What this assumes: store files are never rewritten in place (publishing writes new files and
    renames them, and a revision is immutable). A file truncated while mapped makes the hash's read
    of an evicted page a SIGBUS, which kills the process; staging also compares the file's size,
    mtime and inode before and after, to catch a rewrite that kept the size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.opened = os.stat_result((0,) * 10)  # fstat at open; compared after the pass
        self.view = memoryview(b"")
        self._fd = -1
        self._map: mmap.mmap | None = None

    def __enter__(self) -> MappedFile:
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self.opened = os.fstat(self._fd)
            self.size = self.opened.st_size
            if self.size:  # an empty file cannot be mapped, and has nothing to read
                self._map = mmap.mmap(self._fd, self.size, prot=mmap.PROT_READ)
                self._map.madvise(mmap.MADV_SEQUENTIAL)  # read ahead further, drop what is behind
                self.view = memoryview(self._map)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.view.release()
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a traceback still holds a slice: closed when freed
                self._map.close()
            self._map = None
        os.close(self._fd)
        self._fd = -1


def _preadv_all(fd: int, buf: memoryview, offset: int) -> int:
    """Fill ``buf`` from ``offset`` straight from the page cache (no new buffer); short only at EOF."""
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got
