"""A model revision's own files: the manifest (per-file sha256 and size), its sidecars, and hashing.

A directory (or store revision) is complete exactly when its ``manifest.json`` exists: the manifest is
written after every file, in one atomic step, so a reader never sees a partial model. This module holds
the one ``sha256_file``, the one manifest parser, reader and writer, and the atomic small-file write.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmfleet.errors import WeightsError

MANIFEST = "manifest.json"
# Files kept beside a revision that are not part of it (not in its manifest): derived from the
# weights, so they can be added to an immutable revision later. Each is written in one atomic step.
GOLDEN = "golden.json"
SIDECARS = frozenset({GOLDEN})
CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


# --- the manifest ---------------------------------------------------------------------------------


def manifest_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise WeightsError("manifest has no 'files' mapping")
    return files


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes, where: str, fix: str = "publish that revision again") -> dict[str, Any]:
    """The manifest in ``data`` (read from ``where``); a corrupt one is an error that says ``fix``."""
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as exc:
        problem = f"is corrupt ({exc})"
    else:
        if isinstance(manifest, dict):
            return manifest
        problem = "is not a JSON object"
    raise WeightsError(f"{where} {problem}; {fix}")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a local model directory, None when it has none (not a complete copy)."""
    try:
        data = (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None
    return parse_manifest(data, str(directory / MANIFEST), f"delete {directory} and deploy again")


def commit_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``directory``'s manifest in one step (a rename), after every file of it."""
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_bytes(manifest_bytes(manifest))
    os.replace(tmp, directory / MANIFEST)


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


def write_manifest(
    directory: Path, model: str, revision: str, source: dict[str, object]
) -> dict[str, object]:
    """Hash every file in ``directory`` (not sidecars such as golden.json) and write the manifest last."""
    files = {
        rel: {"sha256": sha256_file(directory / rel), "size": (directory / rel).stat().st_size}
        for rel in local_files(directory)
    }
    manifest: dict[str, Any] = {"model": model, "revision": revision, "source": source, "files": files}
    commit_manifest(directory, manifest)
    return manifest


# --- sidecars -------------------------------------------------------------------------------------


def check_sidecar(name: str) -> None:
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
