"""Constant load through the gateway while the deployment is disturbed; counts the requests that fail.

Scenarios (each under the same load, on a deployment of two CPU instances of the default model):
  rolling  a redeploy that changes every instance's vLLM arguments: the playbook drains, replaces,
           gates and re-admits one instance at a time. Target: 0 failed requests.
  kill     kill -9 of one instance's vLLM API server; the gateway ejects it, its supervisor restarts
           it, and it is re-admitted after its checks pass. Target: no more failures than requests
           in flight on that instance when it died.
  reload   three gateway reloads (SIGUSR2 to HAProxy's master). Target: 0 failed requests.
  bluegreen  a redeploy that changes every instance's arguments, blue-green: a second pair of instances
           is started and gated beside the first, the gateway switches to it, and the first pair is
           retired once vLLM serves nothing on it. Target: 0 failed requests.

Run (deploys with tests/e2e/operations-vars.yml: gateway on 48000; undeploys at the end):
  .venv/bin/python bench/operations.py [--scenario rolling kill reload bluegreen] [--concurrency 4] [--keep]

Loopback only; every loop is bounded in count and time. The load mixes short non-streamed chat
requests with streamed ones (one in four), each on a fresh connection, as independent clients would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[1]
VARS_FILE = REPO / "tests" / "e2e" / "operations-vars.yml"
BIN = Path(sys.executable).parent
MODEL = "smollm2-135m-instruct"
REQUEST_TIMEOUT_S = 120.0
MAX_REQUESTS_PER_WORKER = 5000
SCENARIO_LIMIT_S = 900.0


def load_vars(path: Path = VARS_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def playbook(
    name: str, vars_file: Path, *extra: str, timeout: int = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), name, "-e", f"@{vars_file}", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
    )


def status(vars_: dict) -> dict:
    registry = Path(vars_["llmfleet_common_state_dir"]) / "deployments"
    proc = subprocess.run(
        [str(BIN / "llmfleet"), "status", "--json", "--registry", str(registry)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout)


def instances(vars_: dict) -> list[dict]:
    (model,) = [m for m in status(vars_)["models"] if m["model"] == MODEL]
    return [
        {**inst, "service_manager": model["service_manager"]}
        for inst in sorted(model["instances"], key=lambda i: i["name"])
    ]


@dataclass
class Outcome:
    started: float
    ended: float
    status: int  # HTTP status; 0 when the request failed without one
    error: str = ""
    instance: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass
class Load:
    """Workers that send requests until stopped, each on a fresh connection: back to back, or with
    ``pause_s`` between a worker's requests (a lighter load that still never stops)."""

    base_url: str
    api_key: str
    concurrency: int
    pause_s: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _one(self, stream: bool) -> Outcome:
        parts = urlsplit(self.base_url)
        body = json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
                "temperature": 0,
                "stream": stream,
            }
        )
        started = time.monotonic()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                body,
                {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
            )
            resp = conn.getresponse()
            payload = resp.read()
            error = ""
            if resp.status == 200 and stream and not payload.rstrip().endswith(b"data: [DONE]"):
                error = "stream cut before [DONE]"
            elif resp.status != 200:
                error = payload[:200].decode(errors="replace")
            return Outcome(started, time.monotonic(), resp.status, error, resp.getheader("X-Instance-Id", ""))
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(started, time.monotonic(), 0, f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def _worker(self, index: int) -> None:
        for count in range(MAX_REQUESTS_PER_WORKER):
            if self._stop.is_set():
                return
            outcome = self._one(stream=(count + index) % 4 == 0)
            with self._lock:
                self.outcomes.append(outcome)
            if self.pause_s:
                self._stop.wait(self.pause_s)

    def start(self) -> None:
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._worker, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)
        with self._lock:
            return list(self.outcomes)


@dataclass(frozen=True)
class Scenario:
    """A disturbance in three steps, so that only the disturbance itself runs under the load.

    On two cores the CPU instances under load starve every new process (``llmfleet status`` took 17 to
    49 s instead of 0.6 s), so whatever needs the CLI or supervisorctl runs before the load starts or
    after it stops; under the load only the disturbance and in-process admin-socket reads run.
    """

    prepare: Callable[[dict, Path], dict]  # before the load: look up pids and state
    disturb: Callable[[dict, dict], dict]  # under the load
    report: Callable[[dict, dict], dict]  # after the load: check what changed


def run_under_load(
    base_url: str,
    api_key: str,
    concurrency: int,
    scenario: Scenario,
    vars_: dict,
    vars_file: Path,
    warmup_s: float = 5.0,
    pause_s: float = 0.0,
) -> dict:
    """Start the load, let it settle, disturb, stop; report the requests that failed."""
    context = scenario.prepare(vars_, vars_file)
    load = Load(base_url, api_key, concurrency, pause_s=pause_s)
    load.start()
    time.sleep(warmup_s)
    began = time.monotonic()
    try:
        detail = scenario.disturb(vars_, context)
    finally:
        time.sleep(warmup_s)  # requests right after the disturbance count too
        outcomes = load.stop()
    action_seconds = round(time.monotonic() - began - warmup_s, 1)
    failed = [o for o in outcomes if not o.ok]
    return {
        "requests": len(outcomes),
        "failed": len(failed),
        "failures": [{"status": o.status, "error": o.error[:160]} for o in failed[:20]],
        "action_seconds": action_seconds,
        **detail,
        **scenario.report(vars_, context),
    }


def admin_socket(vars_: dict) -> Path:
    return Path(vars_["llmfleet_common_runtime_dir"]) / "haproxy.sock"


def pids(vars_: dict) -> dict[str, int | None]:
    return {i["name"]: i["pid"] for i in instances(vars_)}


def redeploy_prepare(vars_: dict, vars_file: Path) -> dict:
    # Alternate max_num_seqs between runs so that every run changes every instance's arguments.
    registry = Path(vars_["llmfleet_common_state_dir"]) / "deployments" / f"{MODEL}.json"
    argv = json.loads(registry.read_text())["plan"]["instances"][0]["argv"]
    seqs = argv[argv.index("--max-num-seqs") + 1]
    new_seqs = "12" if seqs != "12" else "16"
    return {"vars_file": vars_file, "pids": pids(vars_), "seqs": seqs, "new_seqs": new_seqs}


def redeploy(strategy: str) -> Callable[[dict, dict], dict]:
    def disturb(vars_: dict, context: dict) -> dict:
        del vars_
        proc = playbook(
            "deploy-model.yml",
            context["vars_file"],
            "-e",
            f"model={MODEL}",
            "-e",
            f"deployment_plan_max_num_seqs={context['new_seqs']}",
            "-e",
            f"deployment_plan_update_strategy={strategy}",
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{strategy} redeploy failed:\n{proc.stdout[-4000:]}")
        return {"max_num_seqs": f"{context['seqs']} -> {context['new_seqs']}"}

    return disturb


def rolling_report(vars_: dict, context: dict) -> dict:
    after = pids(vars_)
    return {"instances_replaced": sorted(n for n, pid in context["pids"].items() if after.get(n) != pid)}


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def bluegreen_report(vars_: dict, context: dict) -> dict:
    return {
        "instances_before": sorted(context["pids"]),
        "instances_after": sorted(pids(vars_)),
        "previous_still_running": sorted(n for n, pid in context["pids"].items() if _alive(pid)),
    }


def _api_server_pid(wrapper_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == wrapper_pid:
                return int(entry.name)
    raise RuntimeError(f"no vLLM API server under wrapper {wrapper_pid}")


def kill_prepare(vars_: dict, vars_file: Path) -> dict:
    del vars_file
    victim = instances(vars_)[0]
    supervised = victim["service_manager"] == "supervisord"
    # Under supervisord the program is llmfleet's wrapper; the process that serves is its child.
    target = _api_server_pid(victim["pid"]) if supervised else victim["pid"]
    return {"victim": victim["name"], "service_pid": victim["pid"], "target": target}


def kill_disturb(vars_: dict, context: dict) -> dict:
    """kill -9, then wait (reading only the admin socket) for the ejection and the re-admission."""
    from llmfleet.gateway.rotation import server_state

    socket_path, victim = admin_socket(vars_), context["victim"]
    in_flight = server_state(socket_path, MODEL, victim).sessions
    os.kill(context["target"], signal.SIGKILL)
    killed_at = time.monotonic()
    ejected_after = None
    while time.monotonic() < killed_at + SCENARIO_LIMIT_S:
        state = server_state(socket_path, MODEL, victim).status
        if ejected_after is None and state.startswith("DOWN"):
            ejected_after = round(time.monotonic() - killed_at, 1)
        # The killed process cannot answer a check, so UP after DOWN is the restarted instance.
        if ejected_after is not None and state == "UP":
            return {
                "instance": victim,
                "in_flight_on_killed_instance": in_flight,
                "ejected_after_s": ejected_after,
                "back_in_rotation_after_s": round(time.monotonic() - killed_at, 1),
            }
        time.sleep(0.5)
    raise RuntimeError(f"{victim} was not back in rotation within {SCENARIO_LIMIT_S}s")


def kill_report(vars_: dict, context: dict) -> dict:
    return {"restarted": pids(vars_).get(context["victim"]) not in (None, context["service_pid"])}


def worker_pid(vars_: dict) -> int:
    from llmfleet.gateway.keys import admin_command

    lines = admin_command(admin_socket(vars_), "show info").splitlines()
    return int(dict(line.split(": ", 1) for line in lines if ": " in line)["Pid"])


def reload_prepare(vars_: dict, vars_file: Path) -> dict:
    del vars_file
    master = int((Path(vars_["llmfleet_common_runtime_dir"]) / "haproxy.pid").read_text().split()[0])
    return {"master": master, "worker": worker_pid(vars_)}


def reload_disturb(vars_: dict, context: dict) -> dict:
    del vars_
    for _ in range(3):
        os.kill(context["master"], signal.SIGUSR2)  # what supervisorctl signal and systemctl reload send
        time.sleep(2)
    return {"reloads": 3}


def reload_report(vars_: dict, context: dict) -> dict:
    return {"worker_replaced": worker_pid(vars_) != context["worker"]}


SCENARIOS = {
    "rolling": Scenario(redeploy_prepare, redeploy("rolling"), rolling_report),
    "bluegreen": Scenario(redeploy_prepare, redeploy("blue-green"), bluegreen_report),
    "kill": Scenario(kill_prepare, kill_disturb, kill_report),
    "reload": Scenario(reload_prepare, reload_disturb, reload_report),
}
TARGETS = {
    "rolling": "0 failed",
    "kill": "failed <= in flight on the killed instance",
    "reload": "0 failed",
    "bluegreen": "0 failed",
}


def deploy(vars_file: Path) -> None:
    proc = playbook("deploy-model.yml", vars_file, "-e", f"model={MODEL}")
    if proc.returncode != 0:
        raise RuntimeError(f"deploy failed:\n{proc.stdout[-4000:]}")


def undeploy(vars_: dict, vars_file: Path) -> None:
    playbook("undeploy-model.yml", vars_file, "-e", f"model={MODEL}", timeout=600)
    subprocess.run(
        [
            "/opt/llmfleet/supervisor-venv/bin/supervisorctl",
            "-c",
            f"{vars_['llmfleet_common_config_dir']}/supervisor/supervisord.conf",
            "shutdown",
        ],
        capture_output=True,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", nargs="+", choices=sorted(SCENARIOS), default=["rolling", "kill", "reload", "bluegreen"]
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--vars", type=Path, default=VARS_FILE)
    parser.add_argument("--keep", action="store_true", help="leave the deployment running afterwards")
    args = parser.parse_args(argv)
    vars_ = load_vars(args.vars)
    deploy(args.vars)
    results = {}
    try:
        key = Path(status(vars_)["models"][0]["api_key_file"]).read_text().strip()
        for name in args.scenario:
            results[name] = run_under_load(
                vars_["llmfleet_common_gateway_url"], key, args.concurrency, SCENARIOS[name], vars_, args.vars
            )
    finally:
        if not args.keep:
            undeploy(vars_, args.vars)
    print(f"{'scenario':10} {'requests':>9} {'failed':>7}  target / detail")
    for name, result in results.items():
        detail = {k: v for k, v in result.items() if k not in ("requests", "failed", "failures")}
        print(f"{name:10} {result['requests']:>9} {result['failed']:>7}  {TARGETS[name]}; {detail}")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
