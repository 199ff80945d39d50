"""Run one vLLM instance so that none of its processes outlive it (supervisord hosts).

systemd stops a unit's whole cgroup when its main process dies. supervisord only watches the one
process it started: when vLLM's API server dies (a crash, the OOM killer, kill -9), its EngineCore
and Worker children live on, holding gigabytes and a CPU share, and they ignore SIGTERM (measured).
They cannot be found by an environment marker either: they rewrite their environment memory when
they set their process titles. They do stay in the API server's process group.

So this wrapper, which is what supervisord starts, runs vLLM as the leader of a new session and
process group, writes the group id to a file, and:
- when vLLM exits, SIGKILLs whatever is left in the group, then exits with vLLM's status (and
  supervisord restarts it);
- on SIGTERM (a stop), forwards it to the group and SIGKILLs the group after --stop-timeout;
- at start, SIGKILLs a group recorded by an earlier run that is still alive (the wrapper itself
  was killed), after checking it holds vLLM processes, so a reused id is not hit.
Standard library only: it runs with the vLLM venv's python.

    python instance_wrapper.py --pgid-file PATH [--stop-timeout S] -- COMMAND [ARG...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _is_vllm(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vllm" in cmdline.lower()


def kill_group(pgid: int, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every member of the group until none is left; return who was killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout_s
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        killed.extend(pid for pid in members if pid not in killed)
        _reap()
        time.sleep(0.1)
    return killed


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers(pgid_file: Path) -> list[int]:
    """Kill the group an earlier run recorded, if it is still alive and made of vLLM processes."""
    try:
        pgid = int(pgid_file.read_text().strip())
    except (OSError, ValueError):
        return []
    members = group_members(pgid)
    if not any(_is_vllm(pid) for pid in members):
        return []
    return kill_group(pgid)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="run vLLM so that none of its processes outlive it")
    parser.add_argument("--pgid-file", type=Path, required=True)
    parser.add_argument("--stop-timeout", type=float, default=25.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)

    leftovers = kill_leftovers(args.pgid_file)
    if leftovers:
        print(f"llmfleet: killed {len(leftovers)} process(es) an earlier run left: {leftovers}", flush=True)
    child = subprocess.Popen(args.command, start_new_session=True)
    args.pgid_file.parent.mkdir(parents=True, exist_ok=True)
    args.pgid_file.write_text(f"{child.pid}\n")

    def stop(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)
        signal.alarm(max(1, int(args.stop_timeout)))

    def force(_signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    signal.signal(signal.SIGALRM, force)
    returncode = child.wait()
    killed = kill_group(child.pid)
    if killed:
        print(f"llmfleet: vLLM exited ({returncode}); killed {len(killed)} process(es) it left", flush=True)
    with contextlib.suppress(FileNotFoundError):
        args.pgid_file.unlink()
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
