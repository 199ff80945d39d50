"""Real containers after the vllm_container role, with a stand-in image and no GPU
(tests/molecule/vllm-standin/README.md): cpuset, mounts, IPC, log limits, health check, restart, serving."""

import json
import time

import pytest

INSTANCES = {"tiny-0": ("0", 8600), "tiny-1": ("1", 8601)}


def inspect(host, name):
    return json.loads(host.check_output(f"docker inspect llmfleet-vllm-{name}"))[0]


def wait_for(check, attempts=60, pause=2.0):
    """Poll a condition a bounded number of times; return its last value (the assertion is on the value)."""
    value = check()
    for _ in range(attempts):
        if value:
            return value
        time.sleep(pause)
        value = check()
    return value


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_one_running_unit_and_container_per_instance(host, name):
    assert host.service(f"llmfleet-vllm-{name}").is_enabled
    assert host.service(f"llmfleet-vllm-{name}").is_running
    assert inspect(host, name)["State"]["Running"]


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_container_pinned_to_its_cpuset_and_memory_node(host, name):
    cfg = inspect(host, name)["HostConfig"]
    assert cfg["CpusetCpus"] == INSTANCES[name][0]
    assert cfg["CpusetMems"] == "0"
    # The kernel applies it: the container's PID 1 may run only on that CPU.
    pid = inspect(host, name)["State"]["Pid"]
    allowed = host.check_output(f"grep Cpus_allowed_list /proc/{pid}/status").split()[-1]
    assert allowed == INSTANCES[name][0]


def test_weights_mounted_read_only(host):
    mounts = inspect(host, "tiny-0")["Mounts"]
    assert [(m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
        ("/srv/serving/tiny/rev1", "/models/tiny", False)
    ]
    write = host.run("docker exec llmfleet-vllm-tiny-0 touch /models/tiny/x")
    assert write.rc != 0 and "Read-only file system" in write.stderr


def test_ipc_logs_and_network(host):
    cfg = inspect(host, "tiny-0")["HostConfig"]
    assert cfg["IpcMode"] == "host"
    assert cfg["NetworkMode"] == "host"
    assert cfg["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "100m", "max-file": "5"}}
    # No GPU here: no device request was made (vllm_container_gpus_enabled: false).
    assert not cfg["DeviceRequests"]


def test_gpus_by_index_in_the_unit_when_enabled(host):
    """The unit on this host has no --gpus (switched off); the template's GPU line is checked by rendering the
    role's template with GPUs on in tests/test_vllm_container_unit.py. Here: the rest of the command line."""
    unit = host.file("/etc/systemd/system/llmfleet-vllm-tiny-1.service").content_string
    assert "--gpus" not in unit
    assert "--cpuset-cpus 1 --cpuset-mems 0" in unit
    assert "--model /models/tiny --served-model-name tiny" in unit
    assert "Restart=always" in unit


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_health_check_turns_healthy(host, name):
    health = inspect(host, name)["Config"]["Healthcheck"]
    assert f"http://127.0.0.1:{INSTANCES[name][1]}/health" in " ".join(health["Test"])
    status = wait_for(lambda: inspect(host, name)["State"]["Health"]["Status"] == "healthy")
    assert status, inspect(host, name)["State"]["Health"]


def test_serves_the_model_on_the_planned_port(host):
    models = json.loads(host.check_output("curl -sS http://127.0.0.1:8601/v1/models"))
    assert [m["id"] for m in models["data"]] == ["tiny"]
    reply = json.loads(
        host.check_output(
            "curl -sS http://127.0.0.1:8601/v1/chat/completions -H 'Content-Type: application/json' "
            """-d '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}'"""
        )
    )
    assert reply["model"] == "tiny" and reply["choices"][0]["message"]["content"]


def test_a_changed_instance_was_restarted_alone(host):
    """side_effect.yml changed tiny-1's arguments and converged again: only tiny-1 runs a new container,
    started from the new definition; tiny-0's container is the one from before the change. It runs before
    the kill test below, which restarts tiny-1 by other means."""
    before = dict(line.split() for line in host.file("/root/ids-before-change").content_string.splitlines())
    assert inspect(host, "tiny-0")["Id"] == before["tiny-0"], "an unchanged instance was restarted"
    tiny1 = inspect(host, "tiny-1")
    assert tiny1["Id"] != before["tiny-1"]
    assert (
        "--max-num-seqs" in tiny1["Args"] and tiny1["Args"][tiny1["Args"].index("--max-num-seqs") + 1] == "8"
    )


def test_a_retired_instance_is_stopped_and_its_unit_gone(host):
    """side_effect.yml started tiny-2, then converged a plan without it that names it in vllm_container_retire."""
    assert not host.file("/etc/systemd/system/llmfleet-vllm-tiny-2.service").exists
    assert not host.service("llmfleet-vllm-tiny-2").is_running
    assert host.run("docker inspect llmfleet-vllm-tiny-2").rc != 0, "its container is still there"
    assert host.run("curl -sS --max-time 5 http://127.0.0.1:8602/v1/models").rc != 0, "port 8602 still answers"


def test_killed_container_is_restarted(host):
    before = inspect(host, "tiny-1")["Id"]
    host.check_output("docker kill llmfleet-vllm-tiny-1")

    def restarted():
        out = host.run("docker inspect --format '{{.Id}} {{.State.Running}}' llmfleet-vllm-tiny-1")
        return out.rc == 0 and out.stdout.split()[0] != before and out.stdout.split()[1] == "true"

    ok = wait_for(restarted, attempts=60)
    status = host.run("systemctl status llmfleet-vllm-tiny-1 --no-pager -n 20").stdout
    assert ok, f"systemd did not restart the killed container:\n{status}"
