"""The filesystem store: store URLs, publishing with the manifest last, and the writer lock.

The concurrency tests use real processes; they coordinate through pipes, never through sleeps.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.errors import StoreLockedError, WeightsError
from llmfleet.weights import open_store, publish, read_manifest, verify, write_manifest
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.locks import LockInfo
from llmfleet.weights.publishing import publish_dir
from llmfleet.weights.s3_store import S3Store

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def snapshot(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"a": 1}')
    (path / "model.safetensors").write_bytes(b"\x07" * 100_000)
    (path / "sub" / "tokenizer.json").write_text("{}")
    return path


def test_store_urls():
    assert isinstance(open_store("/srv/models"), FsStore)
    assert open_store("file:///srv/models").root == Path("/srv/models")
    s3 = open_store("s3://fleet-models/team/a/")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("fleet-models", "team/a")
    assert s3.location("m", "r1", "config.json") == "s3://fleet-models/team/a/m/r1/config.json"
    with pytest.raises(WeightsError, match="unknown store scheme"):
        open_store("gs://bucket/x")


def test_publish_writes_the_manifest_last_and_only_once(tmp_path):
    store = FsStore(tmp_path / "store")
    seen = {}

    def before_commit() -> None:
        # Every file is uploaded, and a reader still sees no revision.
        seen["manifest"] = store.manifest("m", "r1")
        seen["final_exists"] = (tmp_path / "store" / "m" / "r1").exists()

    changed, where, manifest = publish_dir(
        store, "m", "r1", snapshot(tmp_path / "snap"), {"kind": "test"}, before_commit=before_commit
    )
    assert changed and where == str(tmp_path / "store" / "m" / "r1")
    assert seen == {"manifest": None, "final_exists": False}
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert manifest["files"]["model.safetensors"]["size"] == 100_000
    assert verify(Path(where)) == []
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == ["r1"]  # no lock, no temp
    again = publish(store, "m", "r1", tmp_path / "snap")
    assert not again.changed and again.detail == "already in the store"


def test_publishing_a_directory_checks_it_against_its_own_manifest(tmp_path):
    src = snapshot(tmp_path / "snap")
    write_manifest(src, "m", "r1", {"kind": "test"})
    pinned = read_manifest(src)["files"]["model.safetensors"]["sha256"]
    (src / "model.safetensors").write_bytes(b"\x08" * 100_000)
    store = FsStore(tmp_path / "store")
    with pytest.raises(WeightsError) as err:
        publish(store, "m", "r1", src)
    assert "model.safetensors" in str(err.value) and pinned in str(err.value)
    import hashlib

    assert hashlib.sha256(b"\x08" * 100_000).hexdigest() in str(err.value)
    assert store.manifest("m", "r1") is None
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == []


def test_a_revision_is_immutable(tmp_path):
    store = FsStore(tmp_path / "store")
    publish(store, "m", "r1", snapshot(tmp_path / "a"))
    other = snapshot(tmp_path / "b")
    write_manifest(other, "m", "r1", {"kind": "test"})
    (other / "config.json").write_text('{"a": 2}')
    write_manifest(other, "m", "r1", {"kind": "test"})
    with pytest.raises(WeightsError, match="revisions are immutable"):
        publish(store, "m", "r1", other)


def write_lock(path: Path, host: str, pid: int, expires_at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = LockInfo("t0", "someone", host, pid, expires_at)
    path.write_bytes(info.to_bytes())


def test_a_live_lock_from_another_host_is_respected_and_named(tmp_path):
    store = FsStore(tmp_path / "store")
    write_lock(tmp_path / "store" / "m" / ".lock", "node-b", 4242, time.time() + 3600)
    with pytest.raises(StoreLockedError) as err:
        publish(store, "m", "r1", snapshot(tmp_path / "snap"))
    assert "pid 4242 on node-b" in str(err.value)
    assert store.manifest("m", "r1") is None


def test_an_expired_lease_from_another_host_is_broken(tmp_path):
    store = FsStore(tmp_path / "store")
    write_lock(tmp_path / "store" / "m" / ".lock", "node-b", 4242, time.time() - 1)
    assert publish(store, "m", "r1", snapshot(tmp_path / "snap")).changed
    assert not (tmp_path / "store" / "m" / ".lock").exists()


HOLDER = """
import sys
from pathlib import Path
from llmfleet.weights.fs_store import FsStore
lock = FsStore(Path(sys.argv[1])).lock("m", owner="holder", lease=3600)
lock.acquire(0)
print("locked", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
"""


def holder(store_root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_crashed_writer_does_not_lock_the_store_forever(tmp_path):
    """The holder is killed with SIGKILL: its lock file stays, with a lease far in the future."""
    proc = holder(tmp_path / "store")
    pid = proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    held = LockInfo.parse((tmp_path / "store" / "m" / ".lock").read_bytes())
    assert held is not None and held.pid == pid and held.host == socket.gethostname()
    assert held.expires_at > time.time() + 3000
    # Same host, process gone: the next writer breaks the lock at once instead of waiting an hour.
    outcome = publish(FsStore(tmp_path / "store"), "m", "r1", snapshot(tmp_path / "snap"))
    assert outcome.changed


def test_two_writer_processes_one_wins_and_the_other_is_told_who_holds_the_lock(tmp_path, capsys):
    proc = holder(tmp_path / "store")
    try:
        src = snapshot(tmp_path / "snap")
        argv = ["weights", "publish", "m", "--from", str(src), "--store", str(tmp_path / "store")]
        code = main([*argv, "--revision", "r1"])
        err = capsys.readouterr().err
        assert code == 6
        assert "is locked by another writer: holder" in err and f"pid {proc.pid}" in err
        assert FsStore(tmp_path / "store").manifest("m", "r1") is None
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "released"
        proc.wait()
    assert main([*argv, "--revision", "r1"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True


# A writer process: publishes src into the store with publish_dir. With "hold" it stops right before
# the manifest (every file uploaded, the lock held) until a line comes on stdin. The acquire loop is
# watched from inside the child: the first time it reads a lock held by another writer it prints
# whose it is, so the parent knows this writer is waiting on that lock before it lets the holder go.
PUBLISHER = """
import json, sys
from pathlib import Path
from llmfleet.errors import StoreLockedError
from llmfleet.weights.fs_store import FsStore
from llmfleet.weights.locks import FsLock
from llmfleet.weights.publishing import publish_dir

original_read = FsLock._read
def watched_read(self):
    current = original_read(self)
    if self.info is None and current is not None and current[0] is not None and not getattr(self, "told", 0):
        self.told = 1  # acquire found the lock held by someone else
        print(json.dumps({"waiting_on_pid": current[0].pid, "owner": current[0].owner}), flush=True)
    return current
FsLock._read = watched_read

def hold():
    print(json.dumps({"uploaded": True}), flush=True)
    sys.stdin.readline()
try:
    changed, where, _ = publish_dir(
        FsStore(Path(sys.argv[1])), "m", "r1", Path(sys.argv[2]), {"kind": "t"},
        lock_wait=float(sys.argv[4]), before_commit=hold if sys.argv[3] == "hold" else None,
    )
except StoreLockedError as exc:
    print(json.dumps({"refused": str(exc)}), flush=True)
    sys.exit(6)
print(json.dumps({"changed": changed}), flush=True)
"""
# Every wait on a child is bounded: a broken lock that hangs a writer fails the test, never the run.
CHILD_TIMEOUT_S = 60.0


def writer(store_root: Path, src: Path, mode: str, lock_wait: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    argv = [sys.executable, "-c", PUBLISHER, str(store_root), str(src), mode, str(lock_wait)]
    # Unbuffered: next_message reads exactly one line, so what comes after is left for finish().
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=env
    )


def next_message(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    """The next JSON line the child prints (it prints one, then waits on the parent or the lock)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], CHILD_TIMEOUT_S)
    assert ready, f"writer pid {proc.pid} printed nothing within {CHILD_TIMEOUT_S}s"
    line = proc.stdout.readline()
    assert line, f"writer pid {proc.pid} exited early: {proc.communicate(timeout=CHILD_TIMEOUT_S)[1]!r}"
    return json.loads(line)


def finish(proc: subprocess.Popen[bytes], stdin: str | None = None) -> tuple[int, str, str]:
    out, err = proc.communicate(stdin.encode() if stdin else None, timeout=CHILD_TIMEOUT_S)
    return proc.returncode, out.decode(), err.decode()


def kill_if_running(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CHILD_TIMEOUT_S)


def test_a_writer_started_while_another_holds_the_lock_waits_then_finds_its_revision(tmp_path):
    store_root = tmp_path / "store"
    src = snapshot(tmp_path / "snap")
    first = writer(store_root, src, "hold", 0)
    second = None
    try:
        # The first writer holds the lock with every file uploaded and no manifest yet.
        assert next_message(first) == {"uploaded": True}
        second = writer(store_root, src, "go", 120)
        # The second writer started now, and its acquire read the first writer's lock.
        assert next_message(second) == {"waiting_on_pid": first.pid, "owner": "llmfleet weights publish"}
        # It is waiting (no refusal, no publish), and no revision exists while the first holds on.
        assert second.poll() is None
        assert FsStore(store_root).manifest("m", "r1") is None
        code, out_first, err_first = finish(first, "\n")
        assert code == 0, err_first
        assert json.loads(out_first) == {"changed": True}
        # Once the lock was released the waiter took it and found the revision already complete.
        code, out_second, err_second = finish(second)
        assert code == 0, err_second
        assert json.loads(out_second) == {"changed": False}
    finally:
        kill_if_running(first, *([second] if second else []))
    assert verify(store_root / "m" / "r1") == []
    assert sorted(p.name for p in (store_root / "m").iterdir()) == ["r1"]  # no lock, no temp left


def test_a_writer_started_while_another_holds_the_lock_without_lock_wait_is_refused_naming_it(tmp_path):
    store_root = tmp_path / "store"
    src = snapshot(tmp_path / "snap")
    first = writer(store_root, src, "hold", 0)
    second = None
    try:
        assert next_message(first) == {"uploaded": True}
        second = writer(store_root, src, "go", 0)
        assert next_message(second) == {"waiting_on_pid": first.pid, "owner": "llmfleet weights publish"}
        code, out_second, err_second = finish(second)
        assert code == 6, err_second
        refused = json.loads(out_second)["refused"]
        assert f"is locked by another writer: llmfleet weights publish (pid {first.pid} on " in refused
        # The refused writer left the holder's lock and upload alone: the holder still publishes.
        assert first.poll() is None
        code, out_first, err_first = finish(first, "\n")
        assert code == 0, err_first
        assert json.loads(out_first) == {"changed": True}
    finally:
        kill_if_running(first, *([second] if second else []))
    assert verify(store_root / "m" / "r1") == []
    assert sorted(p.name for p in (store_root / "m").iterdir()) == ["r1"]


def test_the_next_writer_removes_what_a_crashed_writer_left(tmp_path):
    store = FsStore(tmp_path / "store")
    leftovers = [tmp_path / "store" / "m" / ".r1.publish.abc", tmp_path / "store" / "m" / ".import.xyz"]
    for path in leftovers:
        path.mkdir(parents=True)
        (path / "half.bin").write_bytes(b"half")
    assert publish(store, "m", "r1", snapshot(tmp_path / "snap")).changed
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == ["r1"]
