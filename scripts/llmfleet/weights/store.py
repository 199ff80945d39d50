"""Model stores: where the one verified copy of each model revision lives.

Two backends, one layout::

    <root>/<model>/<revision>/<files...>         the model's files
    <root>/<model>/<revision>/manifest.json      per-file sha256 and size, written LAST
    <root>/<model>/<revision>/golden.json        optional: the reference's golden output (golden.py)
    <root>/<model>/.lock                         the writer lock (owner, host, pid, lease)

``<root>`` is a directory (a shared mount such as FSx for Lustre, EFS or NFS on a fleet; a local
directory here), written as a plain path or ``file:///path``, or an S3 prefix ``s3://bucket/prefix``.
A revision exists exactly when its manifest does. Publishing uploads every file first and the manifest
last, in one atomic step (a rename on a filesystem, a single PUT on S3), so a reader never sees a
partial model.

One writer at a time per model: the lock is a small JSON document with a lease. The holder renews it
while it works; a writer that crashed stops renewing, and once its lease has run out (or, on the same
host, once its pid is gone) the next writer breaks it. On S3 the lock is taken with a conditional PUT
(``If-None-Match: *``) and broken or renewed with ``If-Match`` on the holder's ETag, so two writers
cannot both win.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmfleet.errors import StoreLockedError, WeightsError

MANIFEST = "manifest.json"
# Files kept beside a revision that are not part of it (not in its manifest): derived from the
# weights, so they can be added to an immutable revision later. Each is written in one atomic step.
GOLDEN = "golden.json"
SIDECARS = frozenset({GOLDEN})
LOCK = ".lock"
CHUNK = 8 * 1024 * 1024
DEFAULT_LEASE_SECONDS = 300.0
# Filesystems on this host's own devices (overlay: a container's root, layered over local
# directories). A store on one of them is read in one sequential stream per file (``MappedFile``);
# anything else (nfs, lustre, fuse, ceph...) pays a round trip per request, and is read in parallel
# chunks.
LOCAL_FILESYSTEMS = frozenset(
    {"btrfs", "ext2", "ext3", "ext4", "f2fs", "overlay", "ramfs", "tmpfs", "xfs", "zfs"}
)


def manifest_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise WeightsError("manifest has no 'files' mapping")
    return files


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


# --- the lock -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockInfo:
    token: str
    owner: str
    host: str
    pid: int
    expires_at: float

    @staticmethod
    def new(owner: str, lease: float) -> LockInfo:
        return LockInfo(uuid.uuid4().hex, owner, socket.gethostname(), os.getpid(), time.time() + lease)

    def renewed(self, lease: float) -> LockInfo:
        return LockInfo(self.token, self.owner, self.host, self.pid, time.time() + lease)

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @staticmethod
    def parse(data: bytes) -> LockInfo | None:
        try:
            raw = json.loads(data)
            return LockInfo(
                raw["token"], raw["owner"], raw["host"], int(raw["pid"]), float(raw["expires_at"])
            )
        except (ValueError, KeyError, TypeError):
            return None

    def stale(self) -> bool:
        """The lease ran out, or the holder was on this host and its process is gone."""
        if time.time() > self.expires_at:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self) -> str:
        left = self.expires_at - time.time()
        return f"{self.owner} (pid {self.pid} on {self.host}, lease ends in {max(left, 0):.0f}s)"


class _Lock:
    """Backend-neutral lease loop: acquire (waiting up to ``wait`` seconds), renew in a thread, release."""

    def __init__(self, where: str, owner: str, lease: float) -> None:
        self.where = where
        self.owner = owner
        self.lease = lease
        self.info: LockInfo | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Backend hooks.
    def _create(self, info: LockInfo) -> bool:  # True when created, False when one exists
        raise NotImplementedError

    def _read(self) -> tuple[LockInfo | None, object] | None:  # (info, version) or None when absent
        raise NotImplementedError

    def _break(self, held: LockInfo | None, version: object) -> None:
        raise NotImplementedError

    def _renew(self, info: LockInfo) -> bool:  # False when the lock is no longer ours
        raise NotImplementedError

    def _delete(self) -> None:
        raise NotImplementedError

    def acquire(self, wait: float, poll: float = 0.2) -> None:
        deadline = time.monotonic() + wait
        while True:
            info = LockInfo.new(self.owner, self.lease)
            if self._create(info):
                self.info = info
                self._thread = threading.Thread(target=self._heartbeat, daemon=True)
                self._thread.start()
                return
            current = self._read()
            if current is None:
                continue  # released between our attempt and the read: try again
            held, version = current
            if held is None or held.stale():
                self._break(held, version)
                continue
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"{self.where} is locked by another writer: {held.describe()}. Wait for it to finish "
                    "(or pass a longer --lock-wait); if that writer died, its lock is broken once the "
                    "lease runs out."
                )
            time.sleep(poll)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            assert self.info is not None
            info = self.info.renewed(self.lease)
            try:
                ok = self._renew(info)
            except Exception:  # a network blip: try again at the next beat, the lease has slack
                continue
            if not ok:
                self.lost = f"the lock at {self.where} was taken over by another writer"
                return
            self.info = info

    def check(self) -> None:
        """Raise when the lock is no longer ours; called right before the manifest is written."""
        if self.lost:
            raise WeightsError(f"{self.lost}; nothing was published")
        current = self._read()
        if current is None or current[0] is None or self.info is None or current[0].token != self.info.token:
            raise WeightsError(f"lost the lock at {self.where} to another writer; nothing was published")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self._read()
        held = current[0] if current is not None else None
        if held is not None and self.info is not None and held.token == self.info.token:
            self._delete()
        self.info = None


class FsLock(_Lock):
    """A lock file created with O_EXCL; a stale one is broken under a short-lived ``.break`` guard."""

    def __init__(self, path: Path, owner: str, lease: float) -> None:
        super().__init__(str(path), owner, lease)
        self.path = path
        self._version: object = None

    def _create(self, info: LockInfo) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, info.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _read(self) -> tuple[LockInfo | None, object] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        info = LockInfo.parse(data)
        if info is None:
            # Being written right now, or left half-written by a crash: stale once older than a lease.
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return None
            if age < self.lease:
                return LockInfo("", "a writer (lock file being written)", "?", 0, time.time() + 1), data
        return info, data

    def _break(self, held: LockInfo | None, version: object) -> None:
        guard = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > 60:  # a breaker crashed mid-break
                    guard.unlink()
            time.sleep(0.05)
            return
        os.close(fd)
        try:
            with contextlib.suppress(FileNotFoundError):
                if self.path.read_bytes() == version:  # still the stale lock we judged
                    self.path.unlink()
        finally:
            guard.unlink()

    def _renew(self, info: LockInfo) -> bool:
        current = self._read()
        if current is None or current[0] is None or current[0].token != info.token:
            return False
        tmp = self.path.with_name(f"{self.path.name}.{info.token}.tmp")
        tmp.write_bytes(info.to_bytes())
        os.replace(tmp, self.path)
        return True

    def _delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class S3Lock(_Lock):
    """A lock object created with ``If-None-Match: *``, renewed and broken with ``If-Match``."""

    def __init__(self, client: Any, bucket: str, key: str, owner: str, lease: float) -> None:
        super().__init__(f"s3://{bucket}/{key}", owner, lease)
        self.client = client
        self.bucket = bucket
        self.key = key
        self.etag: str | None = None

    def _conflict(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}

    def _create(self, info: LockInfo) -> bool:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=info.to_bytes(), IfNoneMatch="*"
            )
        except ClientError as exc:
            if self._conflict(exc):
                return False
            raise
        self.etag = resp["ETag"]
        return True

    def _read(self) -> tuple[LockInfo | None, object] | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        return LockInfo.parse(resp["Body"].read()), resp["ETag"]

    def _break(self, held: LockInfo | None, version: object) -> None:
        from botocore.exceptions import ClientError

        # Delete exactly the stale object we judged; a newer lock has another ETag and survives.
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=str(version))
        except ClientError as exc:
            if not self._conflict(exc) and exc.response.get("Error", {}).get("Code") not in {"NoSuchKey"}:
                raise

    def _renew(self, info: LockInfo) -> bool:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=info.to_bytes(), IfMatch=str(self.etag)
            )
        except ClientError as exc:
            if self._conflict(exc) or exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return False
            raise
        self.etag = resp["ETag"]
        return True

    def _delete(self) -> None:
        from botocore.exceptions import ClientError

        with contextlib.suppress(ClientError):
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=str(self.etag))


# --- hashing copies -------------------------------------------------------------------------------


class HashingReader:
    """A read-only stream that hashes what passes through it: the bytes uploaded are the bytes hashed.

    It has no ``seek``, so boto3 reads it once, in order.
    """

    def __init__(self, fh: Any, on_bytes: Callable[[int], None] | None = None) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.digest.update(data)
        self.size += len(data)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data


def copy_hashing(src: Path, dst: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Copy a file and hash it in the same pass; fsync the copy."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        reader = HashingReader(fin, on_bytes)
        while chunk := reader.read(CHUNK):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return reader.digest.hexdigest(), reader.size


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# --- the stores -----------------------------------------------------------------------------------


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

    def lock(self, model: str, owner: str, lease: float = DEFAULT_LEASE_SECONDS) -> _Lock:
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


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{where} is corrupt ({exc}); publish that revision again") from None
    if not isinstance(manifest, dict):
        raise WeightsError(f"{where} is not a JSON object; publish that revision again")
    return manifest


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
        return _parse_manifest(data, str(path))

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

    def lock(self, model: str, owner: str, lease: float = DEFAULT_LEASE_SECONDS) -> _Lock:
        return FsLock(self.root / model / LOCK, owner, lease)

    def begin(self, model: str, revision: str) -> Upload:
        return _FsUpload(self.root / model / revision)

    def read_sidecar(self, model: str, revision: str, name: str) -> bytes | None:
        _check_sidecar(name)
        try:
            return (self.root / model / revision / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_sidecar(self, model: str, revision: str, name: str, data: bytes) -> None:
        _check_sidecar(name)
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
            digest, size = sha256_file(target)
            if on_bytes is not None:
                on_bytes(size)
            return digest, size
        return copy_hashing(src, target, on_bytes)

    def commit(self, manifest: dict[str, Any]) -> None:
        tmp_manifest = self.tmp / f".{MANIFEST}.tmp"
        tmp_manifest.write_bytes(manifest_bytes(manifest))
        os.replace(tmp_manifest, self.tmp / MANIFEST)
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


PROC_MOUNTS = Path("/proc/self/mounts")


@dataclass(frozen=True)
class Mount:
    device: str
    point: str
    fstype: str


def mount_of(path: Path, mounts: Path = PROC_MOUNTS) -> Mount:
    """The mount holding ``path``: the longest mount point above it; fstype "unknown" when unreadable."""
    where = str(path.resolve())
    best = Mount("?", "", "unknown")
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # The kernel writes space, tab, newline and backslash in a mount point as octal escapes.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):
            best = Mount(fields[0], point, fields[2])
    return best


def filesystem_type(path: Path) -> str:
    return mount_of(path).fstype


def _preadv_all(fd: int, buf: memoryview, offset: int) -> int:
    """Fill ``buf`` from ``offset`` straight from the page cache (no new buffer); short only at EOF."""
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def _check_sidecar(name: str) -> None:
    if name not in SIDECARS:
        raise WeightsError(f"{name!r} is not a sidecar file ({', '.join(sorted(SIDECARS))})")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file so that readers see the old one or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def s3_client(workers: int = 10) -> Any:
    """A boto3 S3 client; endpoint and credentials come from the usual AWS settings (AWS_ENDPOINT_URL...)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", config=Config(max_pool_connections=max(10, workers), retries={"mode": "standard"})
    )


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(32)
        return self._client

    def key(self, model: str, revision: str, rel: str = "") -> str:
        parts = [p for p in (self.prefix, model, revision, rel) if p]
        return "/".join(parts)

    def location(self, model: str, revision: str, rel: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(model, revision, rel)}"

    def manifest(self, model: str, revision: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key(model, revision, MANIFEST))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise WeightsError(f"cannot read {self.location(model, revision, MANIFEST)}: {exc}") from None
        return _parse_manifest(resp["Body"].read(), self.location(model, revision, MANIFEST))

    def read_range(self, model: str, revision: str, rel: str, offset: int, length: int) -> bytes:
        return s3_read_range(self.client, self.bucket, self.key(model, revision, rel), offset, length)

    def lock(self, model: str, owner: str, lease: float = DEFAULT_LEASE_SECONDS) -> _Lock:
        key = "/".join(p for p in (self.prefix, model, LOCK) if p)
        return S3Lock(self.client, self.bucket, key, owner, lease)

    def begin(self, model: str, revision: str) -> Upload:
        return _S3Upload(self, model, revision)

    def read_sidecar(self, model: str, revision: str, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        _check_sidecar(name)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key(model, revision, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise WeightsError(f"cannot read {self.location(model, revision, name)}: {exc}") from None
        return resp["Body"].read()

    def write_sidecar(self, model: str, revision: str, name: str, data: bytes) -> None:
        _check_sidecar(name)
        if self.manifest(model, revision) is None:
            raise WeightsError(
                f"{self.location(model, revision)} is not a complete revision; no {name} is written"
            )
        # One PUT: visible whole or not at all.
        self.client.put_object(Bucket=self.bucket, Key=self.key(model, revision, name), Body=data)


def s3_read_range(client: Any, bucket: str, key: str, offset: int, length: int) -> bytes:
    if length <= 0:
        return b""
    resp = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
    return resp["Body"].read()


class _S3Upload(Upload):
    def __init__(self, store: S3Store, model: str, revision: str) -> None:
        self.store = store
        self.model = model
        self.revision = revision
        self.keys: list[str] = []

    def put_file(
        self, rel: str, src: Path, move: bool, on_bytes: Callable[[int], None] | None
    ) -> tuple[str, int]:
        from boto3.s3.transfer import TransferConfig

        key = self.store.key(self.model, self.revision, rel)
        self.keys.append(key)
        config = TransferConfig(multipart_chunksize=64 * 1024 * 1024, max_concurrency=4)
        with src.open("rb") as fh:
            reader = HashingReader(fh, on_bytes)
            self.store.client.upload_fileobj(reader, self.store.bucket, key, Config=config)
        return reader.digest.hexdigest(), reader.size

    def commit(self, manifest: dict[str, Any]) -> None:
        # One PUT: S3 makes the whole object visible at once, so the manifest is never half there.
        self.store.client.put_object(
            Bucket=self.store.bucket,
            Key=self.store.key(self.model, self.revision, MANIFEST),
            Body=manifest_bytes(manifest),
            ContentType="application/json",
        )

    def abort(self) -> None:
        for key in self.keys:
            with contextlib.suppress(Exception):
                self.store.client.delete_object(Bucket=self.store.bucket, Key=key)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise WeightsError(f"{uri!r} is not an S3 URL; write s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


def open_store(url: str | Path) -> Store:
    """``s3://bucket/prefix`` -> S3Store; ``file:///path`` or a plain path -> FsStore."""
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


# --- publishing -----------------------------------------------------------------------------------


def local_files(directory: Path) -> list[str]:
    """The files of a model directory: what a manifest lists (not itself, nor sidecars beside it)."""
    return sorted(
        rel
        for p in directory.rglob("*")
        if p.is_file()
        and (rel := str(p.relative_to(directory))) != MANIFEST
        and rel not in SIDECARS
        and not p.name.startswith(f".{MANIFEST}")
    )


def publish_dir(
    store: Store,
    model: str,
    revision: str,
    src_dir: Path,
    source: dict[str, Any],
    *,
    expected: dict[str, str] | None = None,
    move: bool = False,
    lock_wait: float = 0.0,
    lease: float = DEFAULT_LEASE_SECONDS,
    on_bytes: Callable[[int], None] | None = None,
    owner: str = "llmfleet weights publish",
    before_commit: Callable[[], None] | None = None,
) -> tuple[bool, str, dict[str, Any]]:
    """Take the model's writer lock, then ``publish_locked``."""
    lock = store.lock(model, owner=owner, lease=lease)
    lock.acquire(lock_wait)
    try:
        store.clean_leftovers(model)
        return publish_locked(
            store, lock, model, revision, src_dir, source,
            expected=expected, move=move, on_bytes=on_bytes, before_commit=before_commit,
        )  # fmt: skip
    finally:
        lock.release()


def publish_locked(
    store: Store,
    lock: _Lock,
    model: str,
    revision: str,
    src_dir: Path,
    source: dict[str, Any],
    *,
    expected: dict[str, str] | None = None,
    move: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> tuple[bool, str, dict[str, Any]]:
    """Upload every file of ``src_dir``, hashed in the upload pass, then the manifest last.

    The caller holds ``lock``. ``expected`` (rel -> sha256, e.g. from the directory's own
    manifest.json) must match what was read: a mismatch names the file and both hashes and publishes
    nothing. Returns (changed, location, manifest). A revision that is already complete is left alone;
    one with other contents is an error (revisions are immutable).
    """
    existing = store.manifest(model, revision)
    rels = local_files(src_dir)
    if existing is not None:
        theirs = {rel: meta["sha256"] for rel, meta in manifest_files(existing).items()}
        if expected is None or theirs == expected:
            return False, store.location(model, revision), existing
        raise WeightsError(
            f"{store.location(model, revision)} already holds other files under this revision; "
            "revisions are immutable: publish under a new revision"
        )
    if expected is not None and sorted(expected) != rels:
        missing = sorted(set(expected) - set(rels))
        extra = sorted(set(rels) - set(expected))
        raise WeightsError(
            f"{src_dir} does not match its manifest: missing {missing or 'none'}, "
            f"not listed {extra or 'none'}; nothing was published"
        )
    upload = store.begin(model, revision)
    try:
        files: dict[str, dict[str, Any]] = {}
        for rel in rels:
            digest, size = upload.put_file(rel, src_dir / rel, move, on_bytes)
            if expected is not None and expected[rel] != digest:
                raise WeightsError(
                    f"checksum mismatch publishing {src_dir / rel}: manifest sha256 {expected[rel]}, "
                    f"read sha256 {digest}; nothing was published"
                )
            files[rel] = {"sha256": digest, "size": size}
        manifest = {"model": model, "revision": revision, "source": source, "files": files}
        if before_commit is not None:
            before_commit()
        lock.check()
        upload.commit(manifest)
    except BaseException:
        upload.abort()
        raise
    return True, store.location(model, revision), manifest
