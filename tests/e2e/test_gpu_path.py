"""deploy-model.yml on a GPU host, from a rendered capacity inventory, as far as this machine allows.

What is real: `llmfleet capacity render` writes inventories/<env>/ from SmolLM2's config.json; the real
playbook runs on it against this machine with the gpu profile that render set: preflight, the host plan
from the capacity instances, the GPU preflight against that plan (driver vs the image's CUDA, GPU model,
free memory per GPU, NUMA placement), the weights imported and staged, and one container unit rendered
per planned instance (GPUs by index, the NUMA node's cpuset, the staged weights mounted read-only).

What is substituted, and why: this machine has no GPU and no Docker engine. nvidia-smi is a stand-in that
answers from the hand-written 8 x H100 fixture (tests/fixtures/nvidia/dgx-h100-8gpu, NOT captured output),
and sysfs is that fixture's. `vllm_container_render_only` stops before anything is pulled or started, so
no container runs and nothing is recorded; the container mechanics (start, health check, restart, cpuset)
are tested by the vllm_container molecule scenario on a podman host with Docker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
DGX = REPO / "tests" / "fixtures" / "nvidia" / "dgx-h100-8gpu"
MODEL = "smollm2-135m-instruct"
CONFIG = REPO / "tests" / "data" / "hf-configs" / "HuggingFaceTB--SmolLM2-135M-Instruct"


def render(tmp_path: Path, *extra: str) -> Path:
    """`llmfleet capacity render` for one 8 x H100 node named localhost, plus a file that connects to it."""
    proc = subprocess.run(
        [str(BIN / "llmfleet"), "capacity", "render", "--config", str(CONFIG), "--name", MODEL,
         "--gpu", "H100-80GB", "--gpus-per-node", "8", "--numa-nodes", "2", "--cpus-per-node", "224",
         "--max-model-len", "2048", "--dtype", "bfloat16", "--hosts", "localhost", "--env", "gpu-lab",
         "--out", str(tmp_path), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    inventory = tmp_path / "inventories" / "gpu-lab"
    connection = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}}
    connection["all"]["vars"] = {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    (inventory / "connection.yml").write_text("---\n" + yaml.safe_dump(connection))
    return inventory


def deploy(tmp_path: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    state = tmp_path / "state"
    variables = {
        "llmfleet_common_state_dir": str(state),
        "llmfleet_common_config_dir": str(tmp_path / "etc"),
        "llmfleet_common_log_dir": str(tmp_path / "log"),
        "llmfleet_common_runtime_dir": str(tmp_path / "run"),
        # Import is content-addressed and idempotent: share the store the other end-to-end tests fill.
        "model_weights_store_dir": "/var/lib/llmfleet/store",
        "preflight_gpu_sysfs_root": str(DGX / "sys"),
        "preflight_gpu_min_free_shm_gib": 0,
        "vllm_container_image_version": "v0.6.6",
        "vllm_container_units_dir": str(tmp_path / "units"),
        "vllm_container_render_only": True,
    }
    (tmp_path / "units").mkdir(exist_ok=True)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {
        **os.environ,
        "PATH": f"{DGX.parent / 'bin'}:{BIN}:{os.environ['PATH']}",
        "NVIDIA_SMI_FIXTURE": str(DGX),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "deploy-model.yml", "-e", f"model={MODEL}",
         "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True, text=True, timeout=1200, env=env, cwd=REPO,
    )  # fmt: skip


def _digest_or_standin(inventory: Path) -> None:
    """The unit names the image by digest from images/compat.yml; where that digest is still empty the
    role refuses (no image is run by tag), so the test names a stand-in reference instead."""
    table = yaml.safe_load((REPO / "images" / "compat.yml").read_text())
    if not table["images"]["v0.6.6"].get("digest"):
        extra = inventory / "group_vars" / "all.yml"
        extra.parent.mkdir(exist_ok=True)
        extra.write_text("---\nvllm_container_image: localhost/llmfleet-vllm-standin:1\n")


def test_the_playbook_deploys_what_the_capacity_plan_rendered(tmp_path: Path):
    inventory = render(tmp_path, "--gpu-memory-utilization", "0.45")
    _digest_or_standin(inventory)
    host_vars = yaml.safe_load((inventory / "host_vars" / "localhost.yml").read_text())
    planned = host_vars["llmfleet_capacity_instances"]
    assert len(planned) == 8  # TP=1: one instance per H100

    proc = deploy(tmp_path, inventory)
    assert proc.returncode == 0, proc.stdout[-6000:]

    units = sorted((tmp_path / "units").glob("llmfleet-vllm-*.service"))
    assert [u.name for u in units] == sorted(f"llmfleet-vllm-{MODEL}-{n}.service" for n in range(8))
    staged = next((tmp_path / "state" / "serving" / MODEL).iterdir())
    assert (staged / "manifest.json").is_file(), "the weights were not staged"
    for cap in planned:
        index = int(cap["name"].rsplit("-", 1)[1])
        text = (tmp_path / "units" / f"llmfleet-vllm-{MODEL}-{index}.service").read_text()
        (gpu,) = cap["gpus"]
        assert f"--gpus '\"device={gpu}\"'" in text
        # The NUMA node of the GPU's PCI device in the fixture's sysfs: GPUs 0-3 on node 0, 4-7 on node 1.
        node = 0 if gpu < 4 else 1
        cpus = "0-55,112-167" if node == 0 else "56-111,168-223"
        assert f"--cpuset-cpus {cpus} --cpuset-mems {node}" in text
        assert f"source={staged},target=/models/{MODEL},readonly" in text
        assert f"--served-model-name {MODEL}" in text
        assert re.search(rf"--port {cap['port']}\b", text) and text.count("--port") == 1
        assert "--enable-force-include-usage" in text and "--gpu-memory-utilization 0.45" in text
    # Render only: nothing started, so nothing is recorded for the gateway to route to.
    assert not (tmp_path / "state" / "deployments" / f"{MODEL}.json").exists()
    assert "GPU preflight against the plan" in proc.stdout


def test_a_capacity_plan_the_gpus_cannot_hold_is_refused_before_anything_starts(tmp_path: Path):
    # At 0.9 of each GPU, GPU 5 of the fixture (40 GB in use by something else) cannot take its instance.
    inventory = render(tmp_path, "--gpu-memory-utilization", "0.9")
    _digest_or_standin(inventory)
    proc = deploy(tmp_path, inventory)
    assert proc.returncode != 0
    assert "refused (gpu_memory): GPU 5 needs 73403 MiB" in proc.stdout
    assert "--gpu-memory-utilization 0.49" in proc.stdout, "the refusal must name the fix"
    assert not list((tmp_path / "units").glob("*.service")), "nothing may be rendered after a refusal"


def test_a_capacity_plan_that_changes_what_the_model_outputs_is_refused(tmp_path: Path):
    # The catalog fixes SmolLM2's max_model_len at 2048; a plan made for 4096 must be re-rendered.
    inventory = render(tmp_path, "--gpu-memory-utilization", "0.45", "--max-model-len", "4096")
    _digest_or_standin(inventory)
    proc = deploy(tmp_path, inventory)
    assert proc.returncode != 0
    assert "--max-model-len 4096, the catalog fixes 2048" in proc.stdout
    assert not list((tmp_path / "units").glob("*.service"))
