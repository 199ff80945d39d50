"""The filesystem store: store URLs, publishing with the manifest last, and the writer lock.

The concurrency tests use real processes; they coordinate through pipes, never through sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.errors import StoreLockedError, WeightsError
from llmfleet.store import FsStore, LockInfo, S3Store, open_store, publish_dir
from llmfleet.weights import publish, read_manifest, verify, write_manifest

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
from llmfleet.store import FsStore
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


PUBLISHER = """
import sys, json
from pathlib import Path
from llmfleet.store import FsStore, publish_dir
def hold():
    print("uploaded", flush=True)
    sys.stdin.readline()
changed, where, _ = publish_dir(FsStore(Path(sys.argv[1])), "m", "r1", Path(sys.argv[2]), {"kind": "t"},
                                lock_wait=600, before_commit=hold if sys.argv[3] == "hold" else None)
print(json.dumps({"changed": changed}), flush=True)
"""


def test_a_waiting_writer_finds_the_revision_published_by_the_one_that_won(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    src = snapshot(tmp_path / "snap")
    args = [sys.executable, "-c", PUBLISHER, str(tmp_path / "store"), str(src)]
    first = subprocess.Popen(
        [*args, "hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert first.stdout is not None and first.stdout.readline().strip() == "uploaded"
    # The first writer holds the lock with every file uploaded; the second waits for it.
    second = subprocess.Popen([*args, "go"], stdout=subprocess.PIPE, text=True, env=env)
    out_first, _ = first.communicate("\n")
    out_second, _ = second.communicate()
    assert json.loads(out_first) == {"changed": True}
    assert json.loads(out_second) == {"changed": False}
    assert verify(tmp_path / "store" / "m" / "r1") == []
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == ["r1"]


def test_the_next_writer_removes_what_a_crashed_writer_left(tmp_path):
    store = FsStore(tmp_path / "store")
    leftovers = [tmp_path / "store" / "m" / ".r1.publish.abc", tmp_path / "store" / "m" / ".import.xyz"]
    for path in leftovers:
        path.mkdir(parents=True)
        (path / "half.bin").write_bytes(b"half")
    assert publish(store, "m", "r1", snapshot(tmp_path / "snap")).changed
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == ["r1"]
