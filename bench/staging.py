"""Staging benchmark: llmfleet's staging (sha256 in the copy pass, atomic rename) against a plain
sequential copy of the same bytes, on the same disk, in the same run.

    .venv/bin/python bench/staging.py                       # 1 GiB model, 3 rounds, under build/bench-staging
    .venv/bin/python bench/staging.py --size-mib 2048 --rounds 5 --workdir /var/tmp/x --json

A synthetic model (random bytes in a few ``model-0000N-of-0000M.safetensors`` files and a config.json)
is published to a filesystem store with ``llmfleet.weights.publish``, then each round stages it with
``llmfleet.weights.stage`` (``--reads``: auto, which on a local disk is one sequential mapped stream
per file; parallel, the chunked reads a network store gets) and copies it with ``shutil.copyfile``
file by file (what ``cp`` does: on Linux that is ``sendfile``/``copy_file_range``, no bytes through
Python), each followed by an fsync of every file and the directory, since staging fsyncs and a copy
that leaves its writes in the page cache would be timing memory, not the disk.

The page cache: before every timed copy the caches are dropped (``echo 3 > /proc/sys/vm/drop_caches``,
root only) so both read the store from the disk. Where that is refused, the report says so, and the two
methods' order alternates each round so neither always runs on the warmer cache. Throughput is the
median over rounds; the ratio is staging's median over the plain copy's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from llmfleet.weights import publish, read_manifest, verify
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.mounts import mount_of
from llmfleet.weights.staging import DEFAULT_WORKERS, READS, resolve_reads, stage

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench-synthetic"
REVISION = "r1"
TARGET_RATIO = 0.9
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


class Round(BaseModel):
    order: list[str]
    staging_s: float
    plain_s: float


class StagingReport(BaseModel):
    machine: str
    cpus: int
    filesystem: str
    workdir: str
    bytes: int
    files: int
    rounds: list[Round]
    reads: str  # how staging read the store: parallel chunks or one sequential stream per file
    workers: int
    chunk_bytes: int
    cache: str  # how the page cache was handled
    staging_mib_s: float  # median over rounds
    plain_mib_s: float
    ratio: float  # staging / plain, from the medians
    target_ratio: float = TARGET_RATIO
    staged_verified: bool  # the last staged copy re-hashed against the manifest
    problems: list[str]


def make_model(directory: Path, size: int, files: int) -> None:
    """Random bytes (incompressible, no sparse files) split into ``files`` safetensors-like files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "synthetic", "bytes": size}))
    each, block = size // files, 16 * 2**20
    for i in range(files):
        n = each if i < files - 1 else size - each * (files - 1)
        with (directory / f"model-{i + 1:05d}-of-{files:05d}.safetensors").open("wb") as fh:
            while n > 0:
                fh.write(os.urandom(min(block, n)))
                n -= block


def drop_caches() -> str | None:
    """Drop the page cache; None when it worked, else why not."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _fsync_tree(directory: Path) -> None:
    for path in [*directory.rglob("*"), directory]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def plain_copy(src: Path, dst: Path) -> None:
    """What an operator would do by hand: cp file by file, then sync."""
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    _fsync_tree(dst)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()  # deleting 1 GiB leaves work for the disk; not inside the next timed copy


def run(
    workdir: Path,
    size: int,
    files: int = 4,
    rounds: int = 3,
    workers: int = DEFAULT_WORKERS,
    chunk: int | None = None,
    use_drop_caches: bool = True,
    reads: str = "auto",
    log: Callable[[str], None] = lambda _: None,
) -> StagingReport:
    """Publish a synthetic model of ``size`` bytes, then time both copies ``rounds`` times."""
    from llmfleet.weights.manifest import CHUNK

    chunk = chunk or CHUNK
    workdir.mkdir(parents=True, exist_ok=True)
    src, store_root, out = workdir / "src", workdir / "store", workdir / "out"
    for path in (src, store_root, out):
        shutil.rmtree(path, ignore_errors=True)
    log(f"writing a {size / 2**20:,.0f} MiB synthetic model in {files} files")
    make_model(src, size, files)
    store = FsStore(store_root)
    reads = resolve_reads(store, reads, MODEL, REVISION)
    publish(store, MODEL, REVISION, src)
    shutil.rmtree(src)  # the store copy is the source of both copies below
    store_dir = Path(store.location(MODEL, REVISION))
    manifest = read_manifest(store_dir)
    assert manifest is not None

    cache_problem = drop_caches() if use_drop_caches else "not asked to"
    if cache_problem is None:
        cache = "dropped before every timed copy (echo 3 > /proc/sys/vm/drop_caches)"
    else:
        cache = f"not dropped ({cache_problem}); order alternated each round"
    out.mkdir()
    done: list[Round] = []
    problems: list[str] = []
    for i in range(rounds):
        order = ["staging", "plain"] if i % 2 == 0 else ["plain", "staging"]
        times: dict[str, float] = {}
        for method in order:
            target = out / f"{method}-{i}"
            if cache_problem is None:
                drop_caches()
            if method == "staging":
                times[method] = _timed(
                    lambda t=target: stage(
                        store, MODEL, REVISION, t, workers=workers, chunk=chunk, reads=reads
                    )
                )
                if i == rounds - 1:
                    problems = verify(target, workers=1)
            else:
                times[method] = _timed(lambda t=target: plain_copy(store_dir, t))
            _remove(target)
        log(f"round {i + 1}/{rounds} ({' then '.join(order)}): staging {times['staging']:.2f} s, "
            f"plain {times['plain']:.2f} s")  # fmt: skip
        done.append(Round(order=order, staging_s=times["staging"], plain_s=times["plain"]))
    shutil.rmtree(store_root, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)

    total = sum(int(meta["size"]) for meta in manifest["files"].values())  # type: ignore[union-attr]
    staging = total / statistics.median(r.staging_s for r in done) / 2**20
    plain = total / statistics.median(r.plain_s for r in done) / 2**20
    return StagingReport(
        machine=_machine(),
        cpus=os.cpu_count() or 0,
        filesystem=_filesystem(workdir),
        workdir=str(workdir),
        bytes=total,
        files=len(manifest["files"]),  # type: ignore[arg-type]
        rounds=done,
        reads=reads,
        workers=workers,
        chunk_bytes=chunk,
        cache=cache,
        staging_mib_s=round(staging, 1),
        plain_mib_s=round(plain, 1),
        ratio=round(staging / plain, 3),
        staged_verified=not problems,
        problems=problems,
    )


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {platform.system()} {platform.release()}"


def _filesystem(path: Path) -> str:
    mount = mount_of(path)
    return f"{mount.fstype} on {mount.device} ({mount.point})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="model size (default 1024 MiB)")
    parser.add_argument("--files", type=int, default=4, help="how many files the model is split into")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="staging's parallel reads")
    parser.add_argument(
        "--reads", choices=READS, default="auto", help="staging's reads (auto: sequential on a local disk)"
    )
    parser.add_argument("--chunk-mib", type=int, default=None, help="staging's chunk (default: llmfleet's)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh folder in build/")
    parser.add_argument("--no-drop-caches", action="store_true", help="leave the page cache alone")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.files < 1 or args.rounds < 1 or args.size_mib < 1:
        parser.error("--size-mib, --files and --rounds must be at least 1")
    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-staging.", dir=_build_dir()))
    try:
        report = run(
            workdir, args.size_mib * 2**20, files=args.files, rounds=args.rounds, workers=args.workers,
            chunk=args.chunk_mib * 2**20 if args.chunk_mib else None,
            use_drop_caches=not args.no_drop_caches, reads=args.reads,
            log=lambda m: print(m, file=sys.stderr),
        )  # fmt: skip
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{report.bytes / 2**20:,.0f} MiB in {report.files} files, {len(report.rounds)} rounds, "
              f"{report.filesystem}; page cache {report.cache}")  # fmt: skip
        how = f"{report.workers} workers" if report.reads == "parallel" else "one stream per file"
        print(f"staging (sha256 in the copy pass, {report.reads} reads, {how}): "
              f"{report.staging_mib_s:,.1f} MiB/s")  # fmt: skip
        print(f"plain copy (shutil.copyfile + fsync):           {report.plain_mib_s:,.1f} MiB/s")
        verdict = "meets" if report.ratio >= report.target_ratio else "MISSES"
        print(f"ratio staging/plain: {report.ratio:.3f} ({verdict} the {report.target_ratio}x target)")
        print(f"staged copy verified against its manifest: {report.staged_verified}")
    return 0 if report.staged_verified else 1


def _build_dir() -> Path:
    path = REPO / "build"
    path.mkdir(exist_ok=True)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
