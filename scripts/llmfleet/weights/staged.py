"""Checking and collecting staged copies: ``verify`` re-hashes one against its manifest, ``gc`` removes
old revisions of a model (never one serving)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmfleet.errors import WeightsError
from llmfleet.weights.manifest import MANIFEST, manifest_files, read_manifest, sha256_file
from llmfleet.weights.progress import Outcome


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
