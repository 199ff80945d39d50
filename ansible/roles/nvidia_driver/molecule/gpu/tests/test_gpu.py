"""Real state on a real GPU host after the gpu scenario's converge (molecule.yml, docs/gpu-nodes.md).

Skipped, with the reason, on a host without an NVIDIA GPU on its PCI bus (and so without nvidia-smi): these
checks mean nothing without a GPU, and no stand-in is used here. On a GPU host every check is real: the
driver nvidia-smi talks to, a container that sees the GPUs, a vLLM that answers, and where its memory lives.
"""

from __future__ import annotations

import glob
import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

EXPECT = Path("/var/lib/llmfleet/molecule-gpu/expect.json")


def nvidia_pci_devices() -> list[str]:
    out = []
    for dev in sorted(glob.glob("/sys/bus/pci/devices/*")):
        try:
            vendor = Path(dev, "vendor").read_text().strip()
            klass = Path(dev, "class").read_text().strip()
        except OSError:
            continue
        if vendor == "0x10de" and klass.startswith("0x03"):
            out.append(Path(dev).name)
    return out


# Each test is collected and skipped (a module-level skip would collect nothing, which pytest and molecule
# report as a failure).
pytestmark = pytest.mark.skipif(
    not nvidia_pci_devices(),
    reason="no NVIDIA GPU on this host's PCI bus (sysfs vendor 0x10de, class 0x03xx)"
    + ("" if shutil.which("nvidia-smi") else " and no nvidia-smi")
    + ": the gpu scenario runs only on a real GPU host (docs/gpu-nodes.md)",
)


@pytest.fixture(scope="module")
def expect() -> dict:
    assert EXPECT.exists(), f"{EXPECT} is missing: converge did not get to the vLLM container"
    return json.loads(EXPECT.read_text())


def test_nvidia_smi_lists_the_planned_gpus(host, expect):
    listing = host.check_output("nvidia-smi -L").splitlines()
    indexes = [int(line.split(":")[0].split()[1]) for line in listing if line.startswith("GPU ")]
    assert set(expect["gpus"]) <= set(indexes), listing
    assert len(indexes) == len(nvidia_pci_devices()), (listing, nvidia_pci_devices())


def test_driver_packages_are_held(host):
    held = host.check_output("apt-mark showhold").split()
    assert any("nvidia" in name for name in held), held


def test_a_gpu_container_sees_the_gpus(host, expect):
    """The toolkit's runtime hook works: a container run with --gpus all gets the host's GPUs and driver."""
    inside = host.run(f"docker run --rm --gpus all --entrypoint nvidia-smi {expect['image']} -L")
    assert inside.rc == 0, inside.stderr
    assert inside.stdout.splitlines() == host.check_output("nvidia-smi -L").splitlines()


def test_the_vllm_container_is_ready(expect):
    """The readiness gate's two checks, again: the model is listed and a 1-token completion comes back."""
    base = f"http://127.0.0.1:{expect['port']}"
    with urllib.request.urlopen(f"{base}/v1/models", timeout=30) as resp:
        assert expect["model"] in [m["id"] for m in json.load(resp)["data"]]
    body = json.dumps({"model": expect["model"], "prompt": "Hello", "max_tokens": 1, "temperature": 0})
    request = urllib.request.Request(
        f"{base}/v1/completions", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as resp:
        done = json.load(resp)
    assert done["usage"]["completion_tokens"] == 1, done


def test_the_container_runs_on_its_planned_gpus_and_cpuset(host, expect):
    inspect = json.loads(host.check_output(f"docker inspect {expect['container']}"))[0]
    requests = inspect["HostConfig"]["DeviceRequests"] or []
    assert [r["DeviceIDs"] for r in requests] == [[str(g) for g in expect["gpus"]]], requests
    if expect["numa_node"] not in (None, ""):
        assert inspect["HostConfig"]["CpusetMems"] == str(expect["numa_node"])


def test_vllm_memory_is_on_the_planned_numa_node(host, expect):
    """numastat -p: the vLLM process's memory sits on the NUMA node its GPUs are attached to."""
    if expect["numa_node"] in (None, ""):
        pytest.skip("the planned GPUs report no NUMA node (single-node host): nothing to place")
    node = int(expect["numa_node"])
    pid = host.check_output(f"docker inspect -f '{{{{.State.Pid}}}}' {expect['container']}")
    # The container's PID 1 is vLLM's API server; its engine process is a child with the same cpuset.
    deadline = time.monotonic() + 60
    while True:
        table = host.check_output(f"numastat -p {pid}")
        total = next(line.split() for line in table.splitlines() if line.startswith("Total"))
        # Header "Node 0  Node 1  Total"; the Total row holds one figure per node, then the sum.
        nodes = next(line for line in table.splitlines() if line.strip().startswith("Node 0")).count("Node")
        per_node = [float(v) for v in total[1 : 1 + nodes]]
        if sum(per_node) > 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert sum(per_node) > 0, table
    assert per_node[node] / sum(per_node) >= 0.9, table
