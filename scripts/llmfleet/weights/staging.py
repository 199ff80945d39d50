"""Staging: copy a store revision onto the serving disk, verified in the copy pass, renamed into place.

Layout (roots are settings; these are the local defaults)::

    /var/lib/llmfleet/store/<model>/<revision>/      the store copy (or s3://bucket/prefix/...), see store.py
    /var/lib/llmfleet/serving/<model>/<revision>/    the staged copy vLLM reads (local NVMe or /dev/shm)

Staging reads the store in parallel chunks (a network filesystem or S3) or in one sequential mapped
stream per file (a store on the node's own disks; the engines are in hashed_copy.py), hashes each file
in the same pass as the copy (the bytes written are the bytes checked, no second read), and works in
``.<revision>.partial`` beside the final place: an interrupted stage resumes where it stopped,
fetching only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfleet.errors import WeightsError
from llmfleet.weights.hashed_copy import (
    _Stopped,
    copy_mapped,
    copy_ranges,
    mark_path,
    read_mark,
    rehash_prefix,
)
from llmfleet.weights.locks import FsLock
from llmfleet.weights.manifest import (
    CHUNK,
    GOLDEN,
    MANIFEST,
    manifest_bytes,
    manifest_files,
    read_manifest,
    write_atomic,
)
from llmfleet.weights.progress import Outcome, Progress, progress_wanted
from llmfleet.weights.staged import verify
from llmfleet.weights.store import Store

DEFAULT_WORKERS = 8
# How staging reads the store: parallel chunks (what a network filesystem or S3 rewards: each request
# pays a round trip), or one sequential mapped stream per file (what a local disk rewards; see
# fs_store.MappedFile). auto picks sequential for a store on this host's own disks, parallel otherwise.
READS = ("auto", "parallel", "sequential")


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
    chunk: int = CHUNK,
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

    Not part of the manifest (manifest.SIDECARS), so it is checked here instead: it must have been
    recorded from these weights. One that was not is left out, and the outcome says so.
    """
    from llmfleet.weights.golden import load_bytes, weights_digest

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
            digest = rehash_prefix(part, offset, chunk) if offset else None
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

    (partial / MANIFEST).write_bytes(manifest_bytes(manifest))
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
