"""upgrade-gpu-driver.yml, run for real by ansible-playbook against this machine and a real HAProxy 2.6.

No GPU here, so the driver install is switched off with the playbook's own knob
(upgrade_gpu_driver_install=false); everything around it runs as on a GPU node: the node's instances are read
from a deployment record, drained in the gateway through HAProxy's admin socket (`llmfleet gateway drain`),
stopped, started, held at the readiness gate (`llmfleet ready`: the model is listed AND one completion is
served) and readmitted. The instances are tests/backends/fake_openai_backend.py processes and the record's
supervisorctl is tests/backends/fake_supervisorctl.py, which logs what HAProxy says about an instance at the
moment it is stopped or started. Nothing of the local deployment is touched: the registry, the gateway's
config and socket are temporary, the ports free ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosttools import needs_host_tool
from llmfleet.deploy.plan import ModelPlan
from llmfleet.deploy.registry import Deployment, render_record
from llmfleet.gateway.haproxy import render_gateway
from llmfleet.gateway.policy import GatewayPolicy, GatewaySettings
from llmfleet.gateway.rotation import server_state
from plans import make_plan
from test_gateway_haproxy import FAKE_BACKEND, HAPROXY, HAPROXY_FOUND, START_TIMEOUT_S, free_port, stop

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
FAKE_SUPERVISORCTL = Path(__file__).parent / "backends" / "fake_supervisorctl.py"
MODEL = "model-u"
INSTANCES = [f"{MODEL}-0", f"{MODEL}-1"]
UP_TIMEOUT_S = 30.0

pytestmark = [
    needs_host_tool("haproxy", HAPROXY_FOUND),  # fails instead under LLMFLEET_REQUIRE_HOST_TOOLS=1
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the project venv (make venv)"),
]


@dataclass(frozen=True)
class Node:
    root: Path
    socket: Path
    registry: Path
    state_dir: Path
    plan: ModelPlan


def start_backend(name: str, port: int, log: Path) -> int:
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(FAKE_BACKEND), "--model", MODEL, "--backend-id", name, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert json.loads(line)["port"] == port, line
    return proc.pid


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    config_dir, runtime_dir, keys_dir, quota_dir = (tmp_path / d for d in ("etc", "run", "keys", "quota"))
    registry, state_dir = tmp_path / "deployments", tmp_path / "programs"
    for directory in (config_dir, runtime_dir, keys_dir, quota_dir, registry, state_dir):
        directory.mkdir()
    ports = [free_port() for _ in INSTANCES]
    plan = make_plan(MODEL, ports)
    for inst in plan.instances:
        pid = start_backend(inst.name, inst.port, state_dir / f"{inst.name}.log")
        (state_dir / f"{inst.name}.json").write_text(
            json.dumps({"model": MODEL, "port": inst.port, "pid": pid})
        )
    settings = GatewaySettings(
        listen_port=free_port(),
        metrics_port=free_port(),
        config_dir=str(config_dir),
        runtime_dir=str(runtime_dir),
        quota_dir=str(quota_dir),
    )
    for name, text in render_gateway(settings, GatewayPolicy(), [plan], {}).items():
        (config_dir / name).write_text(text)
    socket_path = runtime_dir / "haproxy.sock"
    supervisorctl = [
        sys.executable,
        str(FAKE_SUPERVISORCTL),
        "--state-dir",
        str(state_dir),
        "--socket",
        str(socket_path),
    ]
    record = Deployment(
        model=MODEL,
        endpoint="http://127.0.0.1:1/v1",
        api_key_file=str(keys_dir / "default.key"),
        weights_path=plan.weights_path,
        service_manager="supervisord",
        supervisorctl=supervisorctl,
        log_dir=str(tmp_path),
        plan=plan,
    )
    (registry / f"{MODEL}.json").write_text(render_record(record))
    log_path = tmp_path / "haproxy.log"
    with log_path.open("wb") as log:
        haproxy = subprocess.Popen(
            [str(HAPROXY), "-W", "-db", "-f", str(config_dir / "haproxy.cfg")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: all(server_state(socket_path, MODEL, i).status == "UP" for i in INSTANCES),
                 START_TIMEOUT_S, f"both servers UP in HAProxy ({log_path})")  # fmt: skip
        yield Node(tmp_path, socket_path, registry, state_dir, plan)
    finally:
        stop(haproxy)
        for name in INSTANCES:
            pid = json.loads((state_dir / f"{name}.json").read_text()).get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def run_upgrade(node: Node, **extra: object) -> subprocess.CompletedProcess[str]:
    variables = {
        "upgrade_gpu_driver_hosts": "localhost",
        # No GPU, no driver here: the knob that exists for this, everything else runs.
        "upgrade_gpu_driver_install": False,
        "llmfleet_common_registry_dir": str(node.registry),
        "nvidia_driver_gateway_host": "localhost",
        "nvidia_driver_gateway_socket": str(node.socket),
        "nvidia_driver_drain_timeout_s": 10,
        "nvidia_driver_ready_timeout_s": 60,
        **extra,
    }
    (node.root / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles")}
    return subprocess.run(
        [str(PLAYBOOK), "-i", str(REPO / "inventories" / "local" / "hosts.yml"),
         str(REPO / "upgrade-gpu-driver.yml"), "-e", f"@{node.root / 'vars.json'}"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip


def journal(node: Node) -> list[dict]:
    path = node.state_dir / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_upgrade_drains_stops_starts_gates_and_readmits_in_order(node: Node) -> None:
    pids_before = {i: json.loads((node.state_dir / f"{i}.json").read_text())["pid"] for i in INSTANCES}
    proc = run_upgrade(node)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    events = journal(node)
    assert [(e["action"], e["instance"]) for e in events] == [
        ("stop", INSTANCES[0]), ("stop", INSTANCES[1]), ("start", INSTANCES[0]), ("start", INSTANCES[1])
    ]  # fmt: skip
    # Drained in HAProxy before it was stopped: new requests had already gone elsewhere.
    assert [e["haproxy"] for e in events if e["action"] == "stop"] == ["DRAIN", "DRAIN"], events
    # Still out of rotation when it was started again (drained, and its checks may have failed meanwhile).
    # (show stat says "DRAIN", or "DRAIN 2/3" / "DOWN" while its checks fail: never "UP".)
    assert all(out_of_rotation(e["haproxy"]) for e in events if e["action"] == "start"), events
    # Really restarted: new processes.
    pids_after = {i: json.loads((node.state_dir / f"{i}.json").read_text())["pid"] for i in INSTANCES}
    assert all(pids_after[i] != pids_before[i] for i in INSTANCES), (pids_before, pids_after)
    # The steps ran in this order, and the readiness gate passed for each instance before the readmit.
    sections = task_sections(proc.stdout)
    order = [
        "drain | Drain this node's instances in the gateway",
        "stop_instances | Stop the instances' supervisord programs",
        "start_instances | Start the instances' supervisord programs",
        "start_instances | Readiness gate (lists the model and serves a real request)",
        "readmit | Put this node's instances back into the gateway",
    ]
    positions = [next(i for i, (title, _) in enumerate(sections) if step in title) for step in order]
    assert positions == sorted(positions), [sections[p][0] for p in positions]
    gate = sections[positions[3]][1]
    assert all(f"ok: [localhost] => (item={name})" in gate for name in INSTANCES), gate
    assert all(
        f"changed: [localhost] => (item={MODEL}/{name})" in sections[positions[4]][1] for name in INSTANCES
    )
    # Readmitted: back in rotation once its health checks pass again, and serving.
    wait_for(lambda: all(server_state(node.socket, MODEL, i).status == "UP" for i in INSTANCES),
             UP_TIMEOUT_S, "both servers UP again after the readmit")  # fmt: skip
    assert "PLAY RECAP" in proc.stdout and "failed=0" in proc.stdout


def test_an_instance_that_fails_the_gate_stops_the_upgrade_and_stays_drained(node: Node) -> None:
    # model-u-1 comes back serving another model: the gate must refuse it, and nothing may be readmitted.
    (node.state_dir / f"{INSTANCES[1]}.serve-model").write_text("some-other-model\n")
    proc = run_upgrade(node, nvidia_driver_ready_timeout_s=4)
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())  # the YAML result format wraps long lines
    assert "did not become ready for" in said and "not ''model-u''" in said, proc.stdout[-4000:]
    assert "lists [''some-other-model'']" in said, proc.stdout[-4000:]
    assert "readmit | Put this node's instances back into the gateway" not in proc.stdout
    # Both stay out of rotation (model-u-0 passed its gate but the node as a whole did not): the node is
    # left drained for someone to look at, and on a fleet the other nodes serve meanwhile (serial: 1).
    time.sleep(3)
    for name in INSTANCES:
        assert out_of_rotation(server_state(node.socket, MODEL, name).status), name


def out_of_rotation(status: str) -> bool:
    return status.split(" ")[0] in ("DRAIN", "DOWN", "MAINT")


def task_sections(stdout: str) -> list[tuple[str, str]]:
    """ansible-playbook's output as (task title, what follows it) pairs, in order."""
    out = []
    for chunk in stdout.split("TASK [")[1:]:
        title, _, body = chunk.partition("]")
        out.append((title, body))
    return out
