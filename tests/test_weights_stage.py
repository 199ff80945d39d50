"""Staging from a filesystem store: hashed in the copy pass, resumable, atomic.

Every test runs twice: with the store taken for a local disk (read in one sequential mapped stream per
file) and for a network mount (read in parallel chunks); which one this machine's tmp really is does
not matter. Interruptions and damage are made by a store wrapper that counts reads and fails a chosen
one (in parallel mode through read_range, in sequential mode through the mapped file it hands out,
whose failing chunk is an unreadable page), by a failing write, or by a child process killed with
SIGKILL; free space is injected; nothing here depends on timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.deploy.registry import Deployment, write_record
from llmfleet.errors import WeightsError
from llmfleet.weights import gc, read_manifest, stage, verify, write_manifest
from llmfleet.weights.fs_store import FsStore, MappedFile

CHUNK = 64 * 1024
BIG = bytes(range(256)) * (10 * CHUNK // 256) + b"tail"  # 10 whole chunks and a short last one


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_revision(root: Path, model: str, revision: str, files: dict[str, bytes]) -> Path:
    directory = root / model / revision
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    write_manifest(directory, model, revision, {"kind": "test"})
    return directory


class CountingView:
    """A mapped store file's view as ``copy_mapped`` uses it: slicing a chunk out of it reads the chunk.

    ``copy_mapped`` slices each chunk twice: for the writer's ``pwrite`` (where the kernel reads the
    pages from the store's disk) and then to hash those same pages. The first slice of an offset is
    counted as its read. The chosen failing chunk comes back as pages that cannot be read (PROT_NONE),
    so the writer's ``pwrite`` fails with EFAULT, as it does on a bad page of a mapped store file.
    """

    def __init__(self, view: memoryview, rel: str, store: CountingStore) -> None:
        self.view = view
        self.rel = rel
        self.store = store
        self.seen: set[int] = set()
        self.unreadable: list[mmap.mmap] = []

    def __getitem__(self, key: slice) -> memoryview:
        start = key.start or 0
        stop = len(self.view) if key.stop is None else min(key.stop, len(self.view))
        if start not in self.seen:
            self.seen.add(start)
            if self.store.fail_at == (self.rel, start):
                bad = mmap.mmap(-1, stop - start, prot=0)
                self.unreadable.append(bad)
                return memoryview(bad)
            self.store.reads.append((self.rel, start, stop - start))
        return self.view[key]

    def release(self) -> None:
        self.view.release()


class CountingMappedFile(MappedFile):
    def __init__(self, path: Path, rel: str, store: CountingStore) -> None:
        super().__init__(path)
        self.rel = rel
        self.store = store
        self.counting: CountingView | None = None

    def __enter__(self) -> CountingMappedFile:
        super().__enter__()
        self.store.mapped_files.append(self.rel)
        self.counting = CountingView(self.view, self.rel, self.store)
        self.view = self.counting  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.counting is not None:
            self.view = self.counting.view
            for bad in self.counting.unreadable:
                with contextlib.suppress(BufferError):  # a traceback may still hold it: freed with it
                    bad.close()
            self.counting = None
        super().__exit__(*exc)


class CountingStore(FsStore):
    """A filesystem store that records every read and can fail one chosen read, in both read modes.

    Parallel stages read it through ``read_range``; sequential ones map its files (``can_map``,
    ``mapped``), and those mapped files count and fail their chunks too (``CountingView``).
    """

    def __init__(self, root: Path, fail_at: tuple[str, int] | None = None) -> None:
        super().__init__(root)
        self.reads: list[tuple[str, int, int]] = []
        self.mapped_files: list[str] = []
        self.fail_at = fail_at

    def read_range(self, model, revision, rel, offset, length):
        if self.fail_at == (rel, offset):
            raise OSError(f"injected: connection lost reading {rel} at {offset}")
        self.reads.append((rel, offset, length))
        return super().read_range(model, revision, rel, offset, length)

    def can_map(self) -> bool:
        return True  # FsStore says no for a subclass that reads differently; this one maps and counts

    def mapped(self, model, revision, rel):
        return CountingMappedFile(self.root / model / revision / rel, rel, self)


@pytest.fixture(autouse=True, params=["ext4", "nfs4"])
def store_filesystem(request, monkeypatch) -> str:
    """What the store's mount is taken to be: ext4 stages read sequentially, nfs4 ones in parallel."""
    import llmfleet.weights.fs_store

    monkeypatch.setattr(llmfleet.weights.fs_store, "filesystem_type", lambda _path: request.param)
    return request.param


def expected_reads(store_filesystem: str) -> str:
    return "sequential" if store_filesystem == "ext4" else "parallel"


def injected_read_failure(store_filesystem: str, offset: int, size: int = len(BIG)):
    """What a CountingStore's failed read of sub/big.bin at ``offset`` raises in this read mode."""
    if expected_reads(store_filesystem) == "sequential":  # the unreadable page of the mapped file
        return pytest.raises(WeightsError, match=rf"big\.bin failed at offset {offset} of {size}: ")
    return pytest.raises(OSError, match=r"injected: connection lost reading sub/big\.bin")


@pytest.fixture
def store(tmp_path: Path) -> FsStore:
    make_revision(tmp_path / "store", "m", "rev1", {"config.json": b'{"a": 1}', "sub/big.bin": BIG})
    return FsStore(tmp_path / "store")


def test_stage_copies_verifies_and_then_skips(store, tmp_path, store_filesystem):
    target = tmp_path / "serving" / "m" / "rev1"
    first = stage(store, "m", "rev1", target, workers=4, chunk=CHUNK)
    assert first.changed and first.extra["reads"] == expected_reads(store_filesystem)
    assert (target / "sub" / "big.bin").read_bytes() == BIG
    assert verify(target) == []
    assert read_manifest(target) == store.manifest("m", "rev1")
    assert first.extra["fetched_bytes"] == len(BIG) + len(b'{"a": 1}')
    second = stage(store, "m", "rev1", target, chunk=CHUNK)
    assert not second.changed
    # Nothing is left beside the staged copy: no partial directory, no lock.
    assert [p.name for p in target.parent.iterdir()] == ["rev1"]


def test_one_reader_and_many_readers_stage_the_same_bytes(store, tmp_path):
    one = stage(store, "m", "rev1", tmp_path / "a" / "m" / "rev1", workers=1, chunk=CHUNK)
    many = stage(store, "m", "rev1", tmp_path / "b" / "m" / "rev1", workers=8, chunk=CHUNK)
    for outcome in (one, many):
        assert (Path(outcome.path) / "sub" / "big.bin").read_bytes() == BIG


def test_an_interrupted_stage_resumes_without_fetching_the_verified_chunks_again(
    store, tmp_path, store_filesystem
):
    target = tmp_path / "serving" / "m" / "rev1"
    broken = CountingStore(store.root, fail_at=("sub/big.bin", 6 * CHUNK))
    with injected_read_failure(store_filesystem, 6 * CHUNK):
        stage(broken, "m", "rev1", target, workers=4, chunk=CHUNK)
    assert ("sub/big.bin" in broken.mapped_files) == (expected_reads(store_filesystem) == "sequential")
    assert not target.exists()
    partial = target.parent / ".rev1.partial"
    # The chunks before the failed read were written in order; the file is not yet under its name.
    assert (partial / "sub" / "big.bin.part").stat().st_size == 6 * CHUNK
    assert not (partial / "sub" / "big.bin").exists()

    again = CountingStore(store.root)
    outcome = stage(again, "m", "rev1", target, workers=4, chunk=CHUNK)
    assert outcome.extra["reads"] == expected_reads(store_filesystem)
    assert outcome.changed and (target / "sub" / "big.bin").read_bytes() == BIG
    big_reads = [offset for rel, offset, _ in again.reads if rel == "sub/big.bin"]
    assert min(big_reads) == 6 * CHUNK, "a chunk copied before the interruption was fetched again"
    assert outcome.extra["reused_bytes"] >= 6 * CHUNK
    assert outcome.extra["fetched_bytes"] == sum(n for _, _, n in again.reads)
    assert outcome.extra["fetched_bytes"] + outcome.extra["reused_bytes"] == outcome.extra["bytes"]
    assert verify(target) == []
    assert not partial.exists()


# A child process stages a model of several MiB in the given read mode, and hangs writing one chunk of
# it once every chunk before that one is hashed (the mark beside the partial file says so), until it
# is killed. It says whether the bytes it was writing came straight from the mapped store file.
KILLED_STAGER = """
import json, mmap, sys, time
from pathlib import Path
import llmfleet.weights.hashed_copy as weights
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.staging import stage

root, target = Path(sys.argv[1]), Path(sys.argv[2])
chunk, stuck_at, reads = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
mark = weights.mark_path(target.parent / ".rev1.partial" / "sub" / "big.bin.part")
real_pwrite_all = weights._pwrite_all

def hashed():
    try:
        return int(mark.read_text())
    except (OSError, ValueError):
        return -1

def pwrite_all(fd, data, offset):
    if offset == stuck_at and len(data) == chunk:
        for _ in range(3000):  # at most 30 s; a mark that never gets there is reported, not waited on
            if hashed() == stuck_at:
                break
            time.sleep(0.01)
        mapped = isinstance(memoryview(data).obj, mmap.mmap)
        print(json.dumps({"hashed": hashed(), "mapped": mapped}), flush=True)
        time.sleep(3600)
    real_pwrite_all(fd, data, offset)

weights._pwrite_all = pwrite_all
stage(FsStore(root), "m", "rev1", target, workers=4, chunk=chunk, reads=reads)
"""
MIB = 1024**2


def test_a_stage_killed_with_sigkill_mid_copy_resumes_from_its_last_hashed_chunk(tmp_path, store_filesystem):
    import random
    import signal
    import subprocess
    import sys

    from llmfleet.weights.hashed_copy import read_mark

    mode = expected_reads(store_filesystem)
    chunk, stuck_at = 256 * 1024, 13 * 256 * 1024  # 24 chunks; killed writing the 14th
    data = random.Random(16).randbytes(6 * MIB)
    make_revision(tmp_path / "store", "m", "rev1", {"config.json": b'{"a": 1}', "sub/big.bin": data})
    target = tmp_path / "serving" / "m" / "rev1"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "scripts")}
    argv = [sys.executable, "-c", KILLED_STAGER, str(tmp_path / "store"), str(target), str(chunk)]
    child = subprocess.Popen([*argv, str(stuck_at), mode], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        said = json.loads(child.stdout.readline())
        # Mid-copy: the 13 chunks before are hashed; in sequential mode straight from the mapping.
        assert said == {"hashed": stuck_at, "mapped": mode == "sequential"}
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
    assert not target.exists()
    part = target.parent / ".rev1.partial" / "sub" / "big.bin.part"
    # Sequential reads have one writer, in order: nothing past the stuck chunk was written. Parallel
    # ones may have written later chunks out of order before the kill; the mark says which prefix was
    # hashed in order, and only that is kept.
    if mode == "sequential":
        assert part.stat().st_size == stuck_at
    assert read_mark(part, chunk) == stuck_at
    assert part.read_bytes()[:stuck_at] == data[:stuck_at]
    again = CountingStore(tmp_path / "store")
    outcome = stage(again, "m", "rev1", target, workers=4, chunk=chunk)
    assert outcome.extra["reads"] == mode
    assert min(offset for rel, offset, _ in again.reads if rel == "sub/big.bin") == stuck_at
    assert outcome.extra["reused_bytes"] >= stuck_at
    assert outcome.changed and (target / "sub" / "big.bin").read_bytes() == data
    assert verify(target) == []


def test_a_damaged_partial_prefix_is_caught_and_the_file_copied_again(store, tmp_path, store_filesystem):
    target = tmp_path / "serving" / "m" / "rev1"
    with injected_read_failure(store_filesystem, 3 * CHUNK):
        stage(CountingStore(store.root, fail_at=("sub/big.bin", 3 * CHUNK)), "m", "rev1", target, chunk=CHUNK)
    part = target.parent / ".rev1.partial" / "sub" / "big.bin.part"
    assert part.stat().st_size == 3 * CHUNK
    with part.open("r+b") as fh:  # the disk lost a byte of the kept prefix
        fh.write(b"\xff")
    again = CountingStore(store.root)
    outcome = stage(again, "m", "rev1", target, chunk=CHUNK)
    assert outcome.extra["reads"] == expected_reads(store_filesystem)
    assert outcome.changed and (target / "sub" / "big.bin").read_bytes() == BIG
    # The resume read on from the kept prefix, found the file's hash wrong, and read it all once more.
    big_reads = sorted(offset for rel, offset, _ in again.reads if rel == "sub/big.bin")
    chunks = range(0, len(BIG), CHUNK)
    assert big_reads == sorted([*chunks[3:], *chunks])
    assert verify(target) == []


def test_a_checksum_mismatch_names_the_file_and_both_hashes_and_keeps_the_serving_copy(store, tmp_path):
    serving = tmp_path / "serving" / "m"
    stage(store, "m", "rev1", serving / "rev1", chunk=CHUNK)
    good = (serving / "rev1" / "sub" / "big.bin").read_bytes()
    # A new revision whose store copy was damaged after its manifest was written.
    rev2 = make_revision(store.root, "m", "rev2", {"config.json": b"{}", "sub/big.bin": BIG})
    (rev2 / "sub" / "big.bin").write_bytes(BIG[:-4] + b"TAIL")
    with pytest.raises(WeightsError) as err:
        stage(store, "m", "rev2", serving / "rev2", chunk=CHUNK)
    message = str(err.value)
    assert "sub/big.bin" in message
    assert f"manifest sha256 {sha(BIG)}" in message
    assert f"read sha256 {sha(BIG[:-4] + b'TAIL')}" in message
    assert not (serving / "rev2").exists()
    assert (serving / "rev1" / "sub" / "big.bin").read_bytes() == good
    assert verify(serving / "rev1") == []
    # The bad bytes are not kept for a resume.
    assert not (serving / ".rev2.partial" / "sub" / "big.bin").exists()
    assert not (serving / ".rev2.partial" / "sub" / "big.bin.part").exists()


def test_not_enough_disk_stops_before_anything_is_copied(store, tmp_path):
    target = tmp_path / "serving" / "m" / "rev1"
    counting = CountingStore(store.root)
    with pytest.raises(WeightsError) as err:
        stage(counting, "m", "rev1", target, free_bytes=lambda _path: 1000, chunk=CHUNK)
    need = len(BIG) + len(b'{"a": 1}')
    message = str(err.value)
    assert f"needs {need} bytes" in message
    assert "1000 bytes" in message and str(target.parent) in message
    assert counting.reads == [] and counting.mapped_files == []
    assert sorted(p.name for p in target.parent.iterdir()) == []


def test_full_verify_re_stages_a_damaged_staged_copy(store, tmp_path):
    target = tmp_path / "serving" / "m" / "rev1"
    stage(store, "m", "rev1", target, chunk=CHUNK)
    (target / "config.json").write_bytes(b'{"a": 2}')
    assert not stage(store, "m", "rev1", target, chunk=CHUNK).changed  # fast path: manifest only
    redone = stage(store, "m", "rev1", target, full_verify=True, chunk=CHUNK)
    assert redone.changed and "was damaged" in redone.detail and "config.json" in redone.detail
    assert (target / "config.json").read_bytes() == b'{"a": 1}'
    clean = stage(store, "m", "rev1", target, full_verify=True, chunk=CHUNK)
    assert not clean.changed and "all match" in clean.detail


def test_stage_requires_a_complete_store_copy(tmp_path):
    (tmp_path / "store" / "m" / "half").mkdir(parents=True)
    with pytest.raises(WeightsError, match=r"no manifest\.json"):
        stage(FsStore(tmp_path / "store"), "m", "half", tmp_path / "out")


def staged(root: Path, names: list[str]) -> None:
    for age, name in enumerate(names):  # the first name is the newest
        directory = make_revision(root, "m", name, {"w.bin": name.encode()})
        stamp = 1_700_000_000 - age * 100
        os.utime(directory / "manifest.json", (stamp, stamp))


def test_gc_keeps_the_newest_and_never_the_one_serving(tmp_path):
    root = tmp_path / "serving"
    staged(root, ["r4", "r3", "r2", "r1"])
    (root / "m" / ".r3.old").mkdir()
    (root / "m" / ".r5.partial").mkdir()
    outcome = gc(root, "m", keep=2, protected=[root / "m" / "r1"])
    assert outcome.changed
    assert sorted(p.name for p in (root / "m").iterdir()) == [".r5.partial", "r1", "r3", "r4"]
    assert outcome.extra["removed"] == [str(root / "m" / "r2"), str(root / "m" / ".r3.old")]
    assert not gc(root, "m", keep=2, protected=[root / "m" / "r1"]).changed
    with pytest.raises(WeightsError, match="at least 1"):
        gc(root, "m", keep=0)


def test_gc_from_the_cli_protects_what_the_registry_says_is_served(tmp_path, capsys):
    from plans import make_plan

    root, registry = tmp_path / "serving", tmp_path / "registry"
    staged(root, ["r3", "r2", "r1"])
    record = Deployment(
        model="m", endpoint="http://x", api_key_file="/k", weights_path=str(root / "m" / "r1"),
        supervisorctl=[], log_dir="/l", plan=make_plan("m", [8100]),
    )  # fmt: skip
    write_record(registry, record)
    code = main(
        ["weights", "gc", "m", "--serving-root", str(root), "--keep", "1", "--registry", str(registry)]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["removed"] == [str(root / "m" / "r2")]
    assert sorted(p.name for p in (root / "m").iterdir()) == ["r1", "r3"]


def test_cli_stage_keeps_stdout_one_json_document_and_progress_on_stderr(store, tmp_path, capsys):
    serving = tmp_path / "serving"
    argv = ["weights", "stage", "m", "--store", f"file://{store.root}", "--serving-root", str(serving)]
    assert main([*argv, "--revision", "rev1", "--progress", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["changed"] and out["path"] == str(serving / "m" / "rev1")
    assert "stage m [" in captured.err and "100.0%" in captured.err
    assert main([*argv, "--revision", "rev1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["changed"] is False
    assert captured.err == ""  # not a terminal and no --progress: silent


def test_cli_stage_still_takes_the_roles_flags(tmp_path, capsys, catalog):
    from llmfleet.catalog.models import revision_id

    revision = revision_id(catalog.get("all-minilm-l6-v2"))
    make_revision(tmp_path / "store", "all-minilm-l6-v2", revision, {"config.json": b"{}"})
    argv = ["weights", "stage", "all-minilm-l6-v2", "--store", str(tmp_path / "store")]
    assert main([*argv, "--serving-root", str(tmp_path / "serving")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["path"] == str(tmp_path / "serving" / "all-minilm-l6-v2" / revision)


# --- how the store is read: parallel chunks, or one sequential mapped stream per file ---------------


def test_auto_reads_a_local_disk_sequentially_a_network_mount_in_parallel_and_either_can_be_forced(
    store, tmp_path, store_filesystem
):
    auto = stage(store, "m", "rev1", tmp_path / "a" / "m" / "rev1", chunk=CHUNK)
    how = {"ext4": "one sequential read per file", "nfs4": "parallel chunked reads"}[store_filesystem]
    assert auto.extra["reads"] == expected_reads(store_filesystem) and how in auto.detail
    forced = [
        stage(store, "m", "rev1", tmp_path / mode / "m" / "rev1", chunk=CHUNK, reads=mode)
        for mode in ("sequential", "parallel")
    ]
    assert [outcome.extra["reads"] for outcome in forced] == ["sequential", "parallel"]
    for outcome in (auto, *forced):
        assert (Path(outcome.path) / "sub" / "big.bin").read_bytes() == BIG
        assert verify(Path(outcome.path)) == []


def test_the_mount_is_looked_up_where_the_revision_is_not_at_the_store_root(store, monkeypatch):
    import llmfleet.weights.fs_store

    asked: list[Path] = []
    monkeypatch.setattr(
        llmfleet.weights.fs_store, "filesystem_type", lambda path: asked.append(path) or "nfs4"
    )
    assert not store.local("m", "rev1") and asked == [store.root / "m" / "rev1"]


def test_sequential_reads_are_refused_for_a_store_that_cannot_be_mapped_and_bad_modes_named(
    tmp_path, store_filesystem
):
    from llmfleet.weights.s3_store import S3Store

    s3 = S3Store("bucket", "fleet", client=object())  # never called: the mode is checked first
    with pytest.raises(WeightsError, match=r"s3://bucket/fleet cannot be mapped.*--reads parallel or auto"):
        stage(s3, "m", "rev1", tmp_path / "out", reads="sequential")
    with pytest.raises(WeightsError, match=r"one of auto, parallel, sequential, not 'fast'"):
        stage(FsStore(tmp_path), "m", "rev1", tmp_path / "out", reads="fast")
    assert not (tmp_path / "out").exists()


def test_a_stage_in_the_other_read_mode_resumes_an_interrupted_one_without_fetching_its_chunks_again(
    store, tmp_path, store_filesystem
):
    # ext4: a sequential stage interrupted, resumed in parallel; nfs4: a parallel one resumed sequentially.
    other = {"sequential": "parallel", "parallel": "sequential"}[expected_reads(store_filesystem)]
    target = tmp_path / "serving" / "m" / "rev1"
    with injected_read_failure(store_filesystem, 6 * CHUNK):
        stage(CountingStore(store.root, fail_at=("sub/big.bin", 6 * CHUNK)), "m", "rev1", target, chunk=CHUNK)
    again = CountingStore(store.root)
    outcome = stage(again, "m", "rev1", target, chunk=CHUNK, reads=other)
    assert outcome.extra["reads"] == other
    assert min(offset for rel, offset, _ in again.reads if rel == "sub/big.bin") == 6 * CHUNK
    assert outcome.changed and (target / "sub" / "big.bin").read_bytes() == BIG
    assert outcome.extra["reused_bytes"] >= 6 * CHUNK
    assert outcome.extra["fetched_bytes"] == outcome.extra["bytes"] - outcome.extra["reused_bytes"]
    assert verify(target) == []


def fail_write_at(monkeypatch, offset: int, exc: OSError) -> None:
    """Make the staged copy's write of the chunk at ``offset`` fail (in either read mode)."""
    import llmfleet.weights.hashed_copy

    real = llmfleet.weights.hashed_copy._pwrite_all

    def failing(fd, data, off):
        if off == offset and len(data) == CHUNK:
            raise exc
        real(fd, data, off)

    monkeypatch.setattr(llmfleet.weights.hashed_copy, "_pwrite_all", failing)


def test_an_interrupted_sequential_stage_resumes_from_its_hashed_prefix(store, tmp_path, monkeypatch):
    target = tmp_path / "serving" / "m" / "rev1"
    with monkeypatch.context() as patch:
        fail_write_at(patch, 6 * CHUNK, OSError(28, "No space left on device"))
        with pytest.raises(OSError, match="No space left"):
            stage(store, "m", "rev1", target, chunk=CHUNK, reads="sequential")
    part = target.parent / ".rev1.partial" / "sub" / "big.bin.part"
    assert part.stat().st_size == 6 * CHUNK and part.read_bytes() == BIG[: 6 * CHUNK]
    outcome = stage(store, "m", "rev1", target, chunk=CHUNK, reads="sequential")
    assert outcome.changed and (target / "sub" / "big.bin").read_bytes() == BIG
    assert outcome.extra["reused_bytes"] >= 6 * CHUNK
    assert outcome.extra["fetched_bytes"] == outcome.extra["bytes"] - outcome.extra["reused_bytes"]
    assert verify(target) == []


def test_a_mapped_page_that_cannot_be_read_is_a_weights_error_naming_the_file(store, tmp_path, monkeypatch):
    import errno

    fail_write_at(monkeypatch, 2 * CHUNK, OSError(errno.EFAULT, "Bad address"))
    target = tmp_path / "serving" / "m" / "rev1"
    with pytest.raises(WeightsError) as err:
        stage(store, "m", "rev1", target, chunk=CHUNK, reads="sequential")
    big = store.root / "m" / "rev1" / "sub" / "big.bin"
    assert f"reading {big} failed at offset {2 * CHUNK} of {len(BIG)}" in str(err.value)
    assert f"it holds {len(BIG)} bytes now, {len(BIG)} when staging began" in str(err.value)
    assert not target.exists()


def test_a_store_file_rewritten_in_place_while_staged_is_refused(store, tmp_path):
    from llmfleet.weights.fs_store import MappedFile
    from llmfleet.weights.hashed_copy import copy_mapped

    big = store.root / "m" / "rev1" / "sub" / "big.bin"

    def rewrite_after_the_first_chunk(_n: int) -> None:
        with big.open("r+b") as fh:  # same size, other bytes: only the mtime tells
            fh.write(b"\xff")
        os.utime(big, ns=(1, 1))

    with MappedFile(big) as source, pytest.raises(WeightsError, match=r"was rewritten while it was staged"):
        copy_mapped(source, len(BIG), tmp_path / "out", chunk=CHUNK, on_bytes=rewrite_after_the_first_chunk)


def test_a_failed_sequential_copy_keeps_only_its_hashed_prefix_for_the_resume(store, tmp_path):
    import hashlib as h

    from llmfleet.weights.fs_store import MappedFile
    from llmfleet.weights.hashed_copy import copy_mapped, read_mark

    part = tmp_path / "big.bin.part"
    seen: list[int] = []

    def fail_after_three_chunks(n: int) -> None:
        seen.append(n)
        if len(seen) == 3:
            raise OSError("injected: the disk went away")

    with MappedFile(store.root / "m" / "rev1" / "sub" / "big.bin") as source, pytest.raises(OSError):
        copy_mapped(source, len(BIG), part, chunk=CHUNK, on_bytes=fail_after_three_chunks, resumable=True)
    # The third chunk was hashed before the failure, the fourth may have been written: it is cut off.
    assert part.stat().st_size == 3 * CHUNK and read_mark(part, CHUNK) == 3 * CHUNK
    assert part.read_bytes() == BIG[: 3 * CHUNK]
    with MappedFile(store.root / "m" / "rev1" / "sub" / "big.bin") as source:
        digest = h.sha256(part.read_bytes())
        resumed = copy_mapped(source, len(BIG), part, chunk=CHUNK, offset=3 * CHUNK, digest=digest)
    assert resumed == sha(BIG) and part.read_bytes() == BIG


def test_a_store_file_shorter_than_its_manifest_is_named_and_nothing_staged(store, tmp_path):
    big = store.root / "m" / "rev1" / "sub" / "big.bin"
    big.write_bytes(BIG[: 5 * CHUNK])
    target = tmp_path / "serving" / "m" / "rev1"
    with pytest.raises(
        WeightsError, match=rf"short read from {big}: it holds {5 * CHUNK} bytes, its manifest"
    ):
        stage(store, "m", "rev1", target, chunk=CHUNK, reads="sequential")
    assert not target.exists()


def test_the_mount_of_a_path_is_the_longest_mount_point_above_it(tmp_path):
    from llmfleet.weights.mounts import Mount, mount_of

    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "fs-1.fsx:/lustre /mnt/fsx lustre rw 0 0\n"
        "srv:/export /mnt/fsx/my\\040models nfs4 rw 0 0\n"
        "srv:/tabs /mnt/a\\011b nfs4 rw 0 0\n"
        "garbage\n"
    )
    assert mount_of(Path("/mnt/fsx/my models/m"), mounts) == Mount(
        "srv:/export", "/mnt/fsx/my models", "nfs4"
    )
    assert mount_of(Path("/mnt/fsx/other"), mounts).fstype == "lustre"
    assert mount_of(Path("/mnt/a\tb/c"), mounts).device == "srv:/tabs"
    assert mount_of(Path("/mnt/fsxx"), mounts).fstype == "ext4"  # a prefix of the name is not a parent
    assert mount_of(Path("/x"), tmp_path / "absent").fstype == "unknown"
