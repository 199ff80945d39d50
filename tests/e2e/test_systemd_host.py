"""The systemd path, for real: a host where systemd is PID 1 runs the same playbooks.

This machine has no systemd as PID 1, so the test host is a podman container built from Debian 12
with systemd as its init (tests/hosts/build-image.sh; no registry is reachable, so the image is
made with debootstrap). The playbook runs inside it, against real vLLM and real HAProxy, as systemd
units. What is shared with this machine, and why:

- the repository and the Python that its .venv points at, read-only (the controller);
- /opt/llmfleet, where the pinned vLLM venv lives (3.5 GB; installing it again would only repeat
  the same pip install), and the content-addressed model store;
- the network namespace, so this test reaches the container's gateway on 127.0.0.1:28000.

The image itself has nothing the roles install: no C++ compiler, no HAProxy (this machine has both). vLLM's
CPU build compiles kernels with torch inductor while it serves (every request that asks for logprobs does),
so on a host without g++ its engine died on such a request after the readiness gate had passed; here the
roles must install the compiler, and the instance must still be the same process after requests of
every kind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HOSTS = REPO / "tests" / "hosts"
IMAGE = "localhost/llmfleet-test-bookworm-systemd:1"
NAME = "llmfleet-e2e-systemd"
MODEL = "smollm2-135m-instruct"
UNIT = f"llmfleet-vllm-{MODEL}-0.service"
VARS = {
    **yaml.safe_load((REPO / "tests" / "e2e" / "isolated-vars.yml").read_text()),
    **yaml.safe_load((REPO / "tests" / "e2e" / "systemd-vars.yml").read_text()),
}
GATEWAY = VARS["llmfleet_common_gateway_url"]
REGISTRY = f"{VARS['llmfleet_common_state_dir']}/deployments"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(HOSTS / "containers.conf")}


def podman(*args: str, timeout: int = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=check, env=PODMAN_ENV
    )


def on_host(command: str, timeout: int = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a shell command inside the test host."""
    return podman("exec", NAME, "bash", "-c", command, timeout=timeout, check=check)


def playbook(name: str, *extra: str, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    args = " ".join(
        [
            f"cd {REPO} && ANSIBLE_NOCOLOR=1 .venv/bin/ansible-playbook {name}",
            "-e @tests/e2e/isolated-vars.yml -e @tests/e2e/systemd-vars.yml",
            *extra,
        ]
    )
    return on_host(args, timeout=timeout, check=False)


def status_json() -> dict:
    out = on_host(f"{REPO}/.venv/bin/llmfleet status --json --registry {REGISTRY}").stdout
    return json.loads(out)


def main_pid(unit: str) -> int:
    return int(on_host(f"systemctl show --property=MainPID --value {unit}").stdout.strip() or 0)


@pytest.fixture(scope="module")
def systemd_host():
    missing = [tool for tool in ("podman", "debootstrap", "runc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make host-packages installs them)")
    if os.geteuid() != 0:
        pytest.skip("rootful podman (systemd as PID 1 in the container) needs root")
    subprocess.run([str(HOSTS / "build-image.sh"), IMAGE], check=True, timeout=900, env=PODMAN_ENV)
    Path("/opt/llmfleet").mkdir(parents=True, exist_ok=True)
    Path("/var/lib/llmfleet/store").mkdir(parents=True, exist_ok=True)
    podman("rm", "--force", NAME, check=False)
    mounts = [
        f"{REPO}:{REPO}:ro",
        f"{sys.base_prefix}:{sys.base_prefix}:ro",
        "/opt/llmfleet:/opt/llmfleet",
        "/var/lib/llmfleet/store:/var/lib/llmfleet/store",
    ]
    podman(
        "run", "--detach", "--name", NAME, "--systemd=always", "--network=host", "--shm-size=1g",
        *[arg for mount in mounts for arg in ("--volume", mount)],
        IMAGE,
    )  # fmt: skip
    # Wait for boot to finish ("degraded" is fine: a container has units that cannot start). Right after
    # the start systemctl cannot reach systemd yet and prints nothing, so ask until it answers.
    deadline, state = time.monotonic() + 120, ""
    while time.monotonic() < deadline and state not in {"running", "degraded"}:
        time.sleep(1)
        state = on_host("systemctl is-system-running", timeout=30, check=False).stdout.strip()
    assert state in {"running", "degraded"}, f"systemd did not boot: {state!r}"
    # What the host has before the playbook runs, for the tests below.
    before = {tool: on_host(f"command -v {tool}", check=False).returncode == 0 for tool in ("g++", "haproxy")}
    try:
        yield before
    finally:
        podman("rm", "--force", "--time", "10", NAME, check=False, timeout=120)


@pytest.fixture(scope="module")
def deployed(systemd_host):
    proc = playbook("deploy-model.yml", f"-e model={MODEL}")
    assert proc.returncode == 0, f"deploy failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def api_key(deployed) -> str:
    return on_host(f"cat {VARS['llmfleet_common_config_dir']}/gateway/keys/default.key").stdout.strip()


def chat(api_key: str) -> str:
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=120)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
    )
    return reply.choices[0].message.content


def n_restarts(unit: str) -> int:
    return int(on_host(f"systemctl show --property=NRestarts --value {unit}").stdout.strip() or 0)


def test_the_test_host_came_without_what_the_roles_install(systemd_host, deployed):
    """The image is a bare server: a pass below is the roles' doing, not the image's."""
    assert systemd_host == {"g++": False, "haproxy": False}
    assert on_host("command -v g++", check=False).returncode == 0, "vllm_runtime did not install a compiler"
    assert on_host("command -v haproxy", check=False).returncode == 0, (
        "the gateway role did not install HAProxy"
    )


def test_the_instance_serves_every_request_shape_as_the_same_process(api_key):
    """Requests of each kind through the gateway, with the official client; logprobs make vLLM compile a
    kernel (torch inductor), which killed the engine on a host without g++. Afterwards systemd must not
    have restarted the instance, and its kernels must have been compiled here, on this host."""
    pid, restarts = main_pid(UNIT), n_restarts(UNIT)
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=300)
    messages = [{"role": "user", "content": "Name a colour."}]
    for _ in range(2):
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, temperature=0)
        assert reply.choices[0].message.content
        chunks = list(
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, stream=True)
        )
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
        reply = client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=4,
            temperature=0.8,
            top_p=0.9,
            logprobs=True,
            top_logprobs=2,
        )
        assert reply.choices[0].logprobs.content
        done = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, logprobs=2)
        assert done.choices[0].logprobs.token_logprobs
        chunks = list(client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, stream=True))
        assert any(c.choices and c.choices[0].text for c in chunks)
        done = client.completions.create(
            model=MODEL, prompt="The sky is", max_tokens=1, extra_body={"prompt_logprobs": 1}
        )
        assert done.choices[0].model_extra.get("prompt_logprobs")
    assert (main_pid(UNIT), n_restarts(UNIT)) == (pid, restarts), "the instance died while serving"
    assert n_restarts(UNIT) == 0
    compiled = on_host("find /tmp/torchinductor_root -name '*.so' | head -n 1", check=False).stdout.strip()
    assert compiled, "no kernel was compiled on the test host: the logprobs requests did not reach inductor"


def test_instances_and_gateway_are_enabled_systemd_units(deployed):
    assert on_host("cat /proc/1/comm").stdout.strip() == "systemd"
    for unit in (UNIT, "llmfleet-gateway.service"):
        assert on_host(f"systemctl is-active {unit}").stdout.strip() == "active"
        assert on_host(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
    # No supervisord on a systemd host, and Debian's own haproxy service is kept off.
    assert on_host("pgrep -f supervisord", check=False).returncode == 1
    assert on_host("systemctl is-enabled haproxy.service", check=False).stdout.strip() == "disabled"


def test_status_reports_the_unit_main_pid(deployed):
    (model,) = status_json()["models"]
    assert model["service_manager"] == "systemd"
    (instance,) = model["instances"]
    assert instance["healthy"] is True
    assert instance["pid"] == main_pid(UNIT)


def test_chat_through_the_gateway(api_key):
    assert chat(api_key).strip()


def test_systemd_restarts_a_killed_instance_and_it_serves_again(api_key):
    before = main_pid(UNIT)
    on_host(f"kill -9 {before}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and main_pid(UNIT) in (0, before):
        time.sleep(1)
    after = main_pid(UNIT)
    assert after not in (0, before), "systemd did not restart the instance"
    (instance,) = status_json()["models"][0]["instances"]
    url = instance["url"].removesuffix("/v1")
    gate = f"{REPO}/.venv/bin/llmfleet ready --url {url} --model {MODEL} --timeout 600"
    ready = on_host(gate, timeout=660, check=False)
    assert ready.returncode == 0, ready.stderr
    # The gateway re-admits the instance after two passing health checks (rise 2, inter 2s).
    deadline = time.monotonic() + 30
    while True:
        try:
            assert chat(api_key).strip()
            break
        except openai.InternalServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_second_deploy_changes_nothing(deployed):
    before = main_pid(UNIT)
    proc = playbook("deploy-model.yml", f"-e model={MODEL}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    changed = re.search(r"^localhost\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.MULTILINE)
    assert changed and changed.group(1) == "0", proc.stdout[-4000:]
    assert main_pid(UNIT) == before


def test_undeploy_stops_and_removes_the_unit(deployed):
    proc = playbook("undeploy-model.yml", f"-e model={MODEL}", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert on_host(f"test -e /etc/systemd/system/{UNIT}", check=False).returncode == 1
    assert on_host(f"systemctl is-active {UNIT}", check=False).stdout.strip() in {"inactive", "unknown"}
    assert on_host("systemctl is-active llmfleet-gateway.service").stdout.strip() == "active"
    assert status_json()["models"] == []
