"""An S3 store: ``s3://bucket/prefix`` (see store.py for the layout).

Each file is uploaded hashed in the upload pass; the manifest is one PUT, so S3 makes it visible whole
or not at all. The writer lock is an object taken with a conditional PUT (locks.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmfleet.errors import WeightsError
from llmfleet.weights.locks import DEFAULT_LEASE_SECONDS, LOCK, Lock, S3Lock
from llmfleet.weights.manifest import MANIFEST, HashingReader, check_sidecar, manifest_bytes, parse_manifest
from llmfleet.weights.store import Store, Upload


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

    def _get(self, model: str, revision: str, rel: str) -> bytes | None:
        """A small object of a revision, whole; None when there is none."""
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key(model, revision, rel))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise WeightsError(f"cannot read {self.location(model, revision, rel)}: {exc}") from None
        return resp["Body"].read()

    def manifest(self, model: str, revision: str) -> dict[str, Any] | None:
        data = self._get(model, revision, MANIFEST)
        return None if data is None else parse_manifest(data, self.location(model, revision, MANIFEST))

    def read_range(self, model: str, revision: str, rel: str, offset: int, length: int) -> bytes:
        return s3_read_range(self.client, self.bucket, self.key(model, revision, rel), offset, length)

    def lock(self, model: str, owner: str, lease: float = DEFAULT_LEASE_SECONDS) -> Lock:
        key = "/".join(p for p in (self.prefix, model, LOCK) if p)
        return S3Lock(self.client, self.bucket, key, owner, lease)

    def begin(self, model: str, revision: str) -> Upload:
        return _S3Upload(self, model, revision)

    def read_sidecar(self, model: str, revision: str, name: str) -> bytes | None:
        check_sidecar(name)
        return self._get(model, revision, name)

    def write_sidecar(self, model: str, revision: str, name: str, data: bytes) -> None:
        check_sidecar(name)
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
