"""Publishing: put a local model directory into a store, every file first and the manifest last.

A directory that carries a manifest.json is checked against it in the upload pass; one without gets a
manifest computed in that same pass. Published under the catalog's revision of a model, the directory
must hold exactly what the catalog pins (``catalog_pins``): that revision names the catalog's bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmfleet.catalog.models import ModelEntry, PypiGgufSource
from llmfleet.errors import WeightsError
from llmfleet.weights.locks import DEFAULT_LEASE_SECONDS, Lock
from llmfleet.weights.manifest import GOLDEN, MANIFEST, SIDECARS, local_files, manifest_files, read_manifest
from llmfleet.weights.progress import Outcome, Progress, progress_wanted
from llmfleet.weights.store import Store

LOCAL_BUILD = "or pass --revision NAME to publish it as a local build"


def catalog_pins(
    model: str, revision: str, entry: ModelEntry, src_dir: Path, shown: str
) -> dict[str, str] | None:
    """What a directory published under the catalog's revision of ``model`` must hold: rel -> sha256.

    A source that pins its files (pypi_snapshot, huggingface, s3) gives them. A pypi_gguf source pins
    the wheel and the GGUF file, not the converted safetensors: only the import's own copy (its
    manifest records the catalog's very source) may be published under that revision; it has no pins
    of its own (None), and is checked against that manifest as every directory with one is. ``shown``
    names the directory in errors (the flag and its value).
    """
    src = entry.source
    if isinstance(src, PypiGgufSource):
        own = read_manifest(src_dir)
        if own is None or own.get("source") != src.model_dump(mode="json"):
            raise WeightsError(
                f"{shown} is not an import of {model}: its catalog revision {revision} is converted from "
                f"a pinned GGUF file, and this folder's {MANIFEST} does not record that source; run "
                f"`llmfleet weights import {model}`, {LOCAL_BUILD}"
            )
        return None
    return dict(src.files)


def _check_pins(
    model: str, revision: str, pins: dict[str, str], rels: list[str], own: dict[str, str] | None, shown: str
) -> None:
    """The directory's files against the catalog's pins, before anything is read: names and, where the
    directory's own manifest lists them, hashes. The bytes are checked in the upload pass."""
    missing = sorted(set(pins) - set(rels))
    if missing:
        raise WeightsError(
            f"{shown} lacks {missing[0]} ({len(missing)} of the {len(pins)} files the catalog pins for "
            f"{model} revision {revision} missing); give the folder holding the pinned files, {LOCAL_BUILD}"
        )
    extra = sorted(set(rels) - set(pins))
    if extra:
        raise WeightsError(
            f"{shown} holds {extra[0]}, which the catalog does not pin for {model} revision {revision} "
            f"({len(extra)} such file(s); besides the pinned files only "
            f"{' and '.join(sorted({MANIFEST, *SIDECARS}))} may be there); remove it, {LOCAL_BUILD}"
        )
    listed = own or {}
    for rel in sorted(listed.keys() & pins.keys()):
        if listed[rel] != pins[rel]:
            raise WeightsError(
                f"{shown}/{rel}: sha256 {listed[rel]} in its {MANIFEST}, but the catalog pins "
                f"{pins[rel]} for {model} revision {revision}; give the pinned file, {LOCAL_BUILD}"
            )


def publish_dir(
    store: Store,
    model: str,
    revision: str,
    src_dir: Path,
    source: dict[str, Any],
    *,
    expected: dict[str, str] | None = None,
    catalog: ModelEntry | None = None,
    shown: str = "",
    move: bool = False,
    lock: Lock | None = None,
    lock_wait: float = 0.0,
    lease: float = DEFAULT_LEASE_SECONDS,
    on_bytes: Callable[[int], None] | None = None,
    owner: str = "llmfleet weights publish",
    before_commit: Callable[[], None] | None = None,
) -> tuple[bool, str, dict[str, Any]]:
    """Upload every file of ``src_dir``, hashed in the upload pass, then the manifest last.

    Without ``lock``, the model's writer lock is taken (waiting up to ``lock_wait``) and what a
    crashed writer left is cleaned first; with it, the caller holds that lock. ``expected`` (rel ->
    sha256, e.g. from the directory's own manifest.json) must match what was read: a mismatch names
    the file and both hashes and publishes nothing. With ``catalog`` (the model's catalog entry), the
    files it pins (``catalog_pins``) are checked the same way, and the directory may hold no other
    file; ``shown`` names the directory in those errors. Returns (changed, location, manifest). A revision
    that is already complete is left alone; one with other contents is an error (revisions are
    immutable).
    """
    if lock is not None:
        return _publish_locked(
            store, lock, model, revision, src_dir, source, expected=expected, catalog=catalog,
            shown=shown or str(src_dir), move=move, on_bytes=on_bytes, before_commit=before_commit,
        )  # fmt: skip
    lock = store.lock(model, owner=owner, lease=lease)
    lock.acquire(lock_wait)
    try:
        store.clean_leftovers(model)
        return publish_dir(
            store, model, revision, src_dir, source, expected=expected, catalog=catalog, shown=shown,
            move=move, lock=lock, on_bytes=on_bytes, before_commit=before_commit,
        )  # fmt: skip
    finally:
        lock.release()


def _publish_locked(
    store: Store,
    lock: Lock,
    model: str,
    revision: str,
    src_dir: Path,
    source: dict[str, Any],
    *,
    expected: dict[str, str] | None,
    catalog: ModelEntry | None,
    shown: str,
    move: bool,
    on_bytes: Callable[[int], None] | None,
    before_commit: Callable[[], None] | None,
) -> tuple[bool, str, dict[str, Any]]:
    rels = local_files(src_dir)
    # Checked with the lock held: a store that cannot be written is named first, whatever the folder.
    pins = None if catalog is None else catalog_pins(model, revision, catalog, src_dir, shown)
    if pins is not None:
        _check_pins(model, revision, pins, rels, expected, shown)
        expected = pins
    existing = store.manifest(model, revision)
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
                    f"{shown}/{rel}: sha256 {digest}, but the catalog pins {expected[rel]} for {model} "
                    f"revision {revision}; nothing was published. Give the pinned file, {LOCAL_BUILD}"
                    if pins is not None
                    else f"checksum mismatch publishing {src_dir / rel}: manifest sha256 {expected[rel]}, "
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


def publish(
    store: Store,
    model: str,
    revision: str,
    src_dir: Path,
    *,
    lock_wait: float = 0.0,
    progress: bool = False,
    catalog: ModelEntry | None = None,
    shown: str = "",
) -> Outcome:
    """Publish a local model directory (a snapshot, or a staged or imported copy) into a store.

    A directory that carries a manifest.json is checked against it in the upload pass; one without
    gets a manifest computed in that same pass. With ``catalog`` (the model's catalog entry: given when
    ``revision`` is its catalog revision) the directory must hold exactly the files it pins, each with
    its pinned sha256 (``catalog_pins``). ``shown`` names the directory in errors (default: --from DIR).
    """
    if not src_dir.is_dir():
        raise WeightsError(f"{src_dir} is not a directory")
    root = getattr(store, "root", None)
    if isinstance(root, Path) and root.resolve().is_relative_to(src_dir.resolve()):
        raise WeightsError(
            f"the store {root} is inside --from {src_dir}: publishing would copy the store into itself; "
            "give the model's own directory as --from, or a store outside it"
        )
    shown = shown or f"--from {src_dir}"
    own = read_manifest(src_dir)
    expected = None
    source: dict[str, Any] = {"kind": "published", "from": str(src_dir)}
    if own is not None:
        expected = {rel: str(meta["sha256"]) for rel, meta in manifest_files(own).items()}
        source = dict(own.get("source") or source)  # type: ignore[arg-type]
    total = sum((src_dir / rel).stat().st_size for rel in local_files(src_dir))
    bar = Progress(f"publish {model}", total, enabled=progress_wanted(progress))
    changed, where, manifest = publish_dir(
        store, model, revision, src_dir, source, expected=expected, catalog=catalog, shown=shown,
        lock_wait=lock_wait, on_bytes=bar,
    )  # fmt: skip
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
