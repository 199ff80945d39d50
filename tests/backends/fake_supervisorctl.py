"""A stand-in for supervisorctl that runs fake OpenAI backends as its "programs" (tests only).

tests/test_upgrade_gpu_driver.py runs upgrade-gpu-driver.yml against a real HAProxy; the instances it stops
and starts are tests/backends/fake_openai_backend.py processes, and this script is the `supervisorctl` their
deployment record names. It implements only what the playbook and `llmfleet ready` call:

  fake_supervisorctl.py --state-dir DIR --socket SOCK stop|start|pid vllm-<instance>

DIR/<instance>.json holds each program's model, port and pid (the test writes the first one). Every stop and
start appends one line to DIR/journal.jsonl with what HAProxy's admin socket SOCK says about that instance at
that moment, so the test can check the order: drained before it was stopped, not readmitted before it was
started and ready. DIR/<instance>.serve-model, when present, makes `start` serve that model name instead (an
instance that comes back wrong, to test that the readiness gate stops the upgrade).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmfleet.gateway.rotation import server_state

BACKEND = Path(__file__).with_name("fake_openai_backend.py")
WAIT_S = 10.0


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(prog="supervisorctl")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("action", choices=["stop", "start", "pid"])
    parser.add_argument("program")
    args = parser.parse_args()
    instance = args.program.removeprefix("vllm-")
    state_file = args.state_dir / f"{instance}.json"
    state = json.loads(state_file.read_text())
    pid = int(state.get("pid") or 0)
    alive = pid > 0 and running(pid)

    if args.action == "pid":
        print(pid if alive else 0)
        return 0

    seen = server_state(args.socket, state["model"], instance)
    with (args.state_dir / "journal.jsonl").open("a") as journal:
        entry = {"action": args.action, "instance": instance, "haproxy": seen.status, "t": time.time()}
        journal.write(json.dumps(entry) + "\n")

    if args.action == "stop":
        if not alive:
            print(f"{args.program}: ERROR (not running)")
            return 1
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WAIT_S
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        state["pid"] = 0
        state_file.write_text(json.dumps(state))
        print(f"{args.program}: stopped")
        return 0

    if alive:
        print(f"{args.program}: ERROR (already started)")
        return 1
    override = args.state_dir / f"{instance}.serve-model"
    model = override.read_text().strip() if override.exists() else state["model"]
    log = (args.state_dir / f"{instance}.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BACKEND),
            "--model",
            model,
            "--backend-id",
            instance,
            "--port",
            str(state["port"]),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WAIT_S)
    if not ready:
        proc.kill()
        print(f"{args.program}: ERROR (spawn error)")
        return 1
    proc.stdout.readline()
    state["pid"] = proc.pid
    state_file.write_text(json.dumps(state))
    print(f"{args.program}: started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
