"""The preflight role's gpu path, run for real by ansible-playbook against this machine.

This machine has no GPU: a stand-in nvidia-smi (tests/fixtures/nvidia/bin/nvidia-smi) answers from the
hand-written fixtures (NOT captured output, see tests/fixtures/nvidia/README.md). Nothing under
/var/lib/llmfleet or /etc/llmfleet is touched: the state directory is a temporary one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "nvidia"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the project venv (make venv)")


def capacity_plan(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "llmfleet", "capacity", "plan", "--json", "--max-model-len", "8192", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)


def run_preflight(
    tmp_path: Path, box: str, profile: str, **extra: object
) -> subprocess.CompletedProcess[str]:
    play = [
        {
            "name": "preflight only",
            "hosts": "localhost",
            "gather_facts": True,
            "gather_subset": ["min"],
            "tasks": [
                {"name": "Preflight", "ansible.builtin.import_role": {"name": "preflight"}},
                {"name": "Show", "ansible.builtin.debug": {"var": "preflight_gpu"}},
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    variables = {
        "preflight_model": "smollm2-135m-instruct",
        "llmfleet_common_profile": profile,
        "llmfleet_common_state_dir": str(tmp_path / "state"),
        "llmfleet_common_catalog": str(REPO / "catalog" / "models.yml"),
        **extra,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {
        **os.environ,
        "PATH": f"{FIXTURES / 'bin'}:{os.environ['PATH']}",
        "NVIDIA_SMI_FIXTURE": str(FIXTURES / box),
        "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    return subprocess.run(
        [str(PLAYBOOK), "-i", str(REPO / "inventories" / "local" / "hosts.yml"), str(tmp_path / "play.yml"),
         "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip


def test_old_driver_refused_new_driver_passes(tmp_path: Path):
    plan = capacity_plan(
        "--config", str(REPO / "tests/data/hf-configs/Qwen--Qwen2.5-7B-Instruct"), "--gpu", "L40S-48GB",
        "--gpus-per-node", "4", "--numa-nodes", "2", "--hosts", "localhost",
    )  # fmt: skip
    proc = run_preflight(
        tmp_path, "pcie-l40s-2socket", "gpu", preflight_gpu_image_version="v0.6.6", preflight_gpu_plan=plan
    )
    # The fixture's driver (535) is too old for v0.6.6 (CUDA 12.4): the role must stop and say so.
    assert proc.returncode != 0
    assert "driver 535.183.01 is too old for image v0.6.6 (CUDA 12.4 needs >= 550.54.14)" in proc.stdout
    ok = run_preflight(
        tmp_path,
        "dgx-h100-8gpu",
        "gpu",
        preflight_gpu_image_version="v0.6.6",
        preflight_gpu_min_free_shm_gib=0,
    )
    assert ok.returncode == 0, ok.stdout[-3000:]
    assert '"placements": {}' in ok.stdout  # no plan given: nothing placed
    assert '"driver_version": "550.54.15"' in ok.stdout and '"ok": true' in ok.stdout


def test_gpu_plan_refusals_are_all_shown(tmp_path: Path):
    plan = capacity_plan(
        "--config", str(REPO / "tests/data/hf-configs/Qwen--Qwen2.5-72B"), "--gpu", "H100-80GB",
        "--gpus-per-node", "8", "--tp", "4", "--numa-nodes", "2", "--cpus-per-node", "224",
    )  # fmt: skip
    proc = run_preflight(
        tmp_path, "dgx-h100-8gpu", "gpu", preflight_gpu_image_version="v0.6.6", preflight_gpu_plan=plan,
        preflight_gpu_plan_host="gpu-node-01",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "refused (gpu_memory): GPU 5 needs 73403 MiB" in proc.stdout


def test_gpu_profile_requires_an_image_version(tmp_path: Path):
    proc = run_preflight(tmp_path, "dgx-h100-8gpu", "gpu")
    assert proc.returncode != 0
    assert "No vLLM image version is set for this GPU host. Set vllm_container_image_version" in proc.stdout


def test_cpu_profile_skips_the_gpu_checks(tmp_path: Path):
    """The CPU path is unchanged: no image version needed, no GPU checks run even where nvidia-smi exists."""
    proc = run_preflight(tmp_path, "pcie-l40s-2socket", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "gpu | Check the driver" not in proc.stdout
    assert (tmp_path / "state").is_dir()
