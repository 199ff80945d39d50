"""The wrapper leaves no process of an instance behind (real processes, no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WRAPPER = Path(__file__).resolve().parents[1] / "scripts" / "llmfleet" / "deploy" / "instance_wrapper.py"

# A stand-in for vLLM's process tree: the main process starts a child that ignores SIGTERM (as
# vLLM's orphaned EngineCore does) and prints its pid. The script's path contains "vllm", as vLLM's
# command lines do (the wrapper only kills leftover groups made of vLLM processes).
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
print(child.pid, flush=True)
if sys.argv[1] == "exit":
    sys.exit(3)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def tree_script(tmp_path: Path) -> Path:
    script = tmp_path / "fake-vllm-tree.py"
    script.write_text(TREE)
    return script


def test_orphans_are_killed_when_the_main_process_exits(tmp_path):
    pgid_file = tmp_path / "run" / "i.pgid"
    proc = subprocess.run(
        [sys.executable, str(WRAPPER), "--pgid-file", str(pgid_file), "--",
         sys.executable, str(tree_script(tmp_path)), "exit"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    orphan = int(proc.stdout.splitlines()[0])
    assert wait_gone(orphan), "the child the main process left behind is still running"
    assert "killed 1 process(es) it left" in proc.stdout
    assert not pgid_file.exists()


def test_sigterm_stops_the_group_and_escalates_to_sigkill(tmp_path):
    pgid_file = tmp_path / "i.pgid"
    wrapper = subprocess.Popen(
        [sys.executable, str(WRAPPER), "--pgid-file", str(pgid_file), "--stop-timeout", "1", "--",
         sys.executable, str(tree_script(tmp_path)), "stay"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    ignoring_child = int(wrapper.stdout.readline())
    main = int(pgid_file.read_text())
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) != 0
    assert wait_gone(main) and wait_gone(ignoring_child), "SIGTERM did not end the whole instance"


def test_a_group_left_by_a_killed_wrapper_is_killed_at_the_next_start(tmp_path):
    pgid_file = tmp_path / "i.pgid"
    first = subprocess.Popen(
        [sys.executable, str(WRAPPER), "--pgid-file", str(pgid_file), "--",
         sys.executable, str(tree_script(tmp_path)), "stay"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    child = int(first.stdout.readline())
    main = int(pgid_file.read_text())
    first.kill()  # SIGKILL: the wrapper gets no chance to clean up
    first.wait(timeout=10)
    assert alive(main) and alive(child)
    second = subprocess.run(
        [sys.executable, str(WRAPPER), "--pgid-file", str(pgid_file), "--", "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 0
    assert "killed 2 process(es) an earlier run left" in second.stdout
    assert wait_gone(main) and wait_gone(child)


def test_a_recorded_group_that_is_not_vllm_is_left_alone(tmp_path):
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        pgid_file = tmp_path / "i.pgid"
        pgid_file.write_text(f"{bystander.pid}\n")  # as if the id had been reused
        proc = subprocess.run(
            [sys.executable, str(WRAPPER), "--pgid-file", str(pgid_file), "--", "true"], timeout=60
        )
        assert proc.returncode == 0
        assert bystander.poll() is None
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()
