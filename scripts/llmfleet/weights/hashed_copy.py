"""The copy engines: copy one file and hash it in the same pass, resumably.

Two engines, one contract: ``copy_ranges`` reads parallel chunks (what a network filesystem or S3
rewards: each request pays a round trip), ``copy_mapped`` streams a mapped local file sequentially
(what a local disk rewards; see fs_store.MappedFile). The bytes written are the bytes hashed, nothing
is read twice. Both share ``_Output``: the partial file cut to the resume offset, the mark beside it
that records the in-order hashed prefix, and the cut back to that prefix when the copy fails.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfleet.errors import WeightsError
from llmfleet.weights.fs_store import MappedFile
from llmfleet.weights.manifest import CHUNK

ReadRange = Callable[[int, int], bytes]
# Fills the buffer from the offset; returns how many bytes it read (fewer only at the end of the file).
ReadInto = Callable[[int, memoryview], int]


class _Stopped(Exception):
    """Another file of the same stage failed; this one stops too (the other's error is reported)."""


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def mark_path(part: Path) -> Path:
    """Beside a partial file: how many bytes of it, from the start, were hashed in order."""
    return part.with_name(part.name + ".ok")


class _Mark:
    """The mark beside a partial file, rewritten in place after every chunk (no new file, no rename).

    Fixed width, so a rewrite never leaves a longer old number's tail. It only says where resuming may
    start: the prefix is hashed again then, and the file's hash checked against the manifest at the end.
    """

    WIDTH = 20

    def __init__(self, part: Path, enabled: bool) -> None:
        self.fd = os.open(mark_path(part), os.O_WRONLY | os.O_CREAT, 0o644) if enabled else -1

    def record(self, done: int) -> None:
        if self.fd >= 0:
            os.pwrite(self.fd, str(done).rjust(self.WIDTH).encode(), 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_mark(part: Path, chunk: int) -> int:
    """The verified prefix of a partial file, in whole chunks; 0 when unknown."""
    try:
        mark = int(mark_path(part).read_text())
        have = part.stat().st_size
    except (OSError, ValueError):
        return 0
    n = min(mark, have)
    return n - n % chunk


def rehash_prefix(path: Path, length: int, chunk: int) -> Any:
    """Hash the first ``length`` bytes of a partial file (a local read, nothing fetched again)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        left = length
        while left:
            data = fh.read(min(chunk, left))
            if not data:
                break
            digest.update(data)
            left -= len(data)
    return digest


@dataclass(frozen=True)
class CopyOptions:
    """What both engines take besides their source (keyword arguments of ``copy_ranges``/``copy_mapped``).

    ``chunk``: bytes per read, write and hash step. ``offset``: the file already holds this prefix,
    and ``digest`` (a sha256 object) has hashed it; only the rest is copied. ``on_bytes``: called with
    each chunk's size once hashed. ``stop``: set when another file of the stage failed. ``what``: the
    source, in errors. ``resumable``: keep the mark beside the file (``mark_path``).
    """

    chunk: int = CHUNK
    offset: int = 0
    digest: Any = None
    on_bytes: Callable[[int], None] | None = None
    stop: threading.Event | None = None
    what: str = ""
    resumable: bool = False


class _Output:
    """The file being written, from ``offset`` on, and what of it is hashed in order (``done``).

    Chunks in flight are ``pending`` (offset, length, future), taken in order by ``next``; each one
    hashed is recorded with ``hashed``.
    """

    def __init__(self, path: Path, opts: CopyOptions) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self.fd, opts.offset)
        self.mark = _Mark(path, opts.resumable)
        self.mark.record(opts.offset)  # an older, longer mark must not outlive the cut above
        self.done = opts.offset
        self.opts = opts
        self.digest = opts.digest or hashlib.sha256()
        self.pending: deque[tuple[int, int, Future[Any]]] = deque()

    def next(self) -> tuple[int, int, Future[Any]]:
        """The oldest chunk in flight; raises ``_Stopped`` once another file of the stage failed."""
        if self.opts.stop is not None and self.opts.stop.is_set():
            raise _Stopped()
        return self.pending.popleft()

    def hashed(self, data: bytes | memoryview) -> None:
        """``data``, the next chunk in order, was written: hash it and record it."""
        self.digest.update(data)
        self.done += len(data)
        self.mark.record(self.done)
        if self.opts.on_bytes is not None:
            self.opts.on_bytes(len(data))

    def cut(self) -> None:
        """After a failure: no chunk may be written after this, and the file ends at what was hashed."""
        for _, _, future in self.pending:
            future.cancel()
        futures_wait([f for _, _, f in self.pending])
        os.ftruncate(self.fd, self.done)
        self.mark.record(self.done)


@contextlib.contextmanager
def _output(path: Path, opts: CopyOptions) -> Iterator[_Output]:
    """An ``_Output``, fsynced when the body finishes, cut back to its hashed prefix when it fails."""
    out = _Output(path, opts)
    try:
        yield out
        os.fsync(out.fd)
    except BaseException:
        out.cut()
        raise
    finally:
        futures_wait([f for _, _, f in out.pending])
        os.close(out.fd)
        out.mark.close()


def copy_ranges(
    read: ReadRange,
    size: int,
    out_path: Path,
    pool: ThreadPoolExecutor,
    *,
    window: int,
    read_into: ReadInto | None = None,
    **options: Any,
) -> str:
    """Copy ``size`` bytes from ``read(offset, length)`` into ``out_path``, hashing in the same pass.

    Up to ``window`` chunks are in flight: each worker reads its chunk and writes it at its offset, and
    hands the very same bytes back to be hashed here strictly in order (the bytes written are the bytes
    hashed; nothing is read twice). With ``offset`` > 0 the file already holds that prefix and
    ``digest`` has hashed it; only the rest is fetched. With ``resumable``, the in-order hashed prefix
    is recorded beside the file (``mark_path``), and on failure the file is cut back to it.

    With ``read_into`` (a local store), chunks are read into ``window`` buffers that are used again
    once hashed: a fresh 8 MiB ``bytes`` per chunk costs the kernel new zeroed pages every time
    (bench/staging.py: 1.5-1.9 s of system time per GiB instead of 0.6 s). ``options``: ``CopyOptions``.
    """
    opts = CopyOptions(**options)
    chunk = opts.chunk
    free: list[bytearray] = []  # buffers hashed already, ready for the next chunk (read_into only)
    next_off = opts.offset

    with _output(out_path, opts) as out:

        def task(off: int, n: int) -> bytes:
            data = read(off, n)
            if len(data) == n:
                _pwrite_all(out.fd, data, off)
            return data

        def task_into(off: int, n: int, buf: bytearray) -> tuple[memoryview, bytearray]:
            view = memoryview(buf)[:n]
            got = read_into(off, view)  # type: ignore[misc]
            if got == n:
                _pwrite_all(out.fd, view, off)
            return view[:got], buf

        def fill() -> None:
            nonlocal next_off
            while len(out.pending) < window and next_off < size:
                n = min(chunk, size - next_off)
                if read_into is None:
                    future = pool.submit(task, next_off, n)
                else:
                    future = pool.submit(task_into, next_off, n, free.pop() if free else bytearray(chunk))
                out.pending.append((next_off, n, future))
                next_off += n

        fill()
        while out.pending:
            off, n, future = out.next()
            data, buf = future.result() if read_into is not None else (future.result(), None)
            if len(data) != n:
                raise WeightsError(
                    f"short read from {opts.what}: wanted {n} bytes at offset {off}, got {len(data)}; "
                    "the store copy is shorter than its manifest says"
                )
            out.hashed(data)
            if buf is not None:
                data.release()
                free.append(buf)
            fill()
    return out.digest.hexdigest()


def copy_mapped(source: MappedFile, size: int, out_path: Path, **options: Any) -> str:
    """``copy_ranges``'s contract for a store file on a local disk: one sequential stream, no buffer.

    A writer thread ``pwrite``s the next chunk of the mapped ``source`` to ``out_path`` (the kernel
    reads it from the disk then, with the file's readahead) while this thread hashes the chunk written
    before, from the same pages. The bytes written are the bytes hashed, each read from the disk once.
    Resuming, the mark beside the file and the cut on failure are as in ``copy_ranges``.
    """
    opts = CopyOptions(**options)
    chunk, what = opts.chunk, opts.what
    if source.size < size:
        raise WeightsError(
            f"short read from {what}: it holds {source.size} bytes, its manifest says {size}; "
            "the store copy is shorter than its manifest says"
        )
    view = source.view
    next_off = opts.offset

    # One writer, so the file is read in order; two chunks in flight, so it reads while we hash.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="llmfleet-stage-write") as writer,
        _output(out_path, opts) as out,
    ):

        def submit() -> None:
            nonlocal next_off
            n = min(chunk, size - next_off)
            future = writer.submit(_pwrite_all, out.fd, view[next_off : next_off + n], next_off)
            out.pending.append((next_off, n, future))
            next_off += n

        while next_off < size and len(out.pending) < 2:
            submit()
        while out.pending:
            off, n, future = out.next()
            try:
                future.result()
            except OSError as exc:
                if exc.errno != errno.EFAULT:
                    raise
                raise WeightsError(_unreadable(source, what, off, size)) from exc
            out.hashed(view[off : off + n])
            if next_off < size:
                submit()
        _check_unchanged(source, what)
    return out.digest.hexdigest()


def _unreadable(source: MappedFile, what: str, offset: int, size: int) -> str:
    try:
        now = f"it holds {os.stat(source.path).st_size} bytes now, {source.size} when staging began"
    except OSError as exc:
        now = f"it cannot be read now ({exc.strerror})"
    return (
        f"reading {what} failed at offset {offset} of {size}: {now}. The store copy changed while it "
        "was staged, or its disk failed; nothing was changed in the serving directory"
    )


def _check_unchanged(source: MappedFile, what: str) -> None:
    """Store files are immutable; one rewritten in place while mapped may have been hashed in part."""
    try:
        now = os.stat(source.path)
    except OSError as exc:
        raise WeightsError(f"{what} disappeared while it was staged ({exc.strerror})") from None
    before = source.opened
    if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
        raise WeightsError(
            f"{what} was rewritten while it was staged (size, mtime or inode changed); store files must "
            "not change once published. Stage again once whatever rewrites it has finished"
        )
