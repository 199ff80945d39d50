"""The writer lock of a model in a store: one writer at a time per model.

The lock is a small JSON document with a lease. The holder renews it while it works; a writer that
crashed stops renewing, and once its lease has run out (or, on the same host, once its pid is gone) the
next writer breaks it. On a filesystem the lock file is created with ``O_EXCL``; on S3 it is taken with
a conditional PUT (``If-None-Match: *``) and broken or renewed with ``If-Match`` on the holder's ETag,
so two writers cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfleet.errors import StoreLockedError, WeightsError

LOCK = ".lock"
DEFAULT_LEASE_SECONDS = 300.0


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


class Lock:
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


class FsLock(Lock):
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


class S3Lock(Lock):
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
