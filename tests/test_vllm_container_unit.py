"""The vllm_container role's unit, rendered by Ansible's own template module with GPUs on.

The molecule scenario (ansible/roles/vllm_container/molecule) runs real containers but has no GPU, so it
switches the device request off; this renders the same template the way a GPU host gets it and checks the
flags: GPUs by index, the NUMA cpuset from `llmfleet preflight gpu`, the image by digest, vLLM's arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from llmfleet.hosts.gpucompat import placements
from llmfleet.hosts.topology import gather

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "ansible" / "roles" / "vllm_container"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
DGX = REPO / "tests" / "fixtures" / "nvidia" / "dgx-h100-8gpu"
DIGEST = "sha256:" + "ab" * 32

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the project venv (make venv)")


def render(tmp_path: Path, **variables: object) -> subprocess.CompletedProcess[str]:
    """Run the role's checks and template tasks only (no docker, no systemd) against localhost."""
    play = [
        {
            "name": "render",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Checks and unit template of vllm_container",
                    "ansible.builtin.include_role": {"name": "vllm_container", "tasks_from": "render.yml"},
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "vars.json").write_text(json.dumps({"vllm_container_units_dir": str(tmp_path), **variables}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(PLAYBOOK), "-i", str(REPO / "inventories/local/hosts.yml"), str(tmp_path / "play.yml"),
         "-e", f"@{tmp_path / 'vars.json'}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dgx_node() -> dict:
    proc = subprocess.run(
        [str(REPO / ".venv/bin/llmfleet"), "capacity", "plan", "--json", "--config",
         str(REPO / "tests/data/hf-configs/Qwen--Qwen2.5-72B"), "--gpu", "H100-80GB", "--gpus-per-node", "8",
         "--tp", "4", "--numa-nodes", "2", "--max-model-len", "8192"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)["nodes"][0]


def test_gpu_unit_has_gpus_by_index_numa_cpuset_and_digest(tmp_path: Path, dgx_node: dict):
    compat = tmp_path / "compat.yml"
    table = yaml.safe_load((REPO / "images" / "compat.yml").read_text())
    table["images"]["v0.6.6"]["digest"] = DIGEST
    compat.write_text(yaml.safe_dump(table))
    places = placements(gather(fixture_dir=DGX), dgx_node)
    proc = render(
        tmp_path,
        vllm_container_image_version="v0.6.6",
        vllm_container_compat_file=str(compat),
        vllm_container_instances=dgx_node["instances"],
        vllm_container_placements=places,
        vllm_container_weights_paths={"qwen2.5-72b": "/var/lib/llmfleet/serving/qwen2.5-72b/abc123"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    unit0 = (tmp_path / "llmfleet-vllm-qwen2.5-72b-0.service").read_text()
    unit1 = (tmp_path / "llmfleet-vllm-qwen2.5-72b-1.service").read_text()
    assert "--gpus '\"device=0,1,2,3\"'" in unit0 and "--gpus '\"device=4,5,6,7\"'" in unit1
    assert "--cpuset-cpus 0-55,112-167 --cpuset-mems 0" in unit0
    assert "--cpuset-cpus 56-111,168-223 --cpuset-mems 1" in unit1
    assert f"docker.io/vllm/vllm-openai@{DIGEST}" in unit0
    assert "--tensor-parallel-size 4" in unit0 and "--port 8100" in unit0 and "--port 8101" in unit1
    assert "source=/var/lib/llmfleet/serving/qwen2.5-72b/abc123,target=/models/qwen2.5-72b,readonly" in unit0
    assert "--ipc host" in unit0 and "Restart=always" in unit0


def test_missing_digest_stops_with_the_command_that_fills_it(tmp_path: Path):
    proc = render(
        tmp_path,
        vllm_container_image_version="v0.6.6",
        vllm_container_instances=[],
        vllm_container_weights_paths={},
    )
    assert proc.returncode != 0
    assert "images/compat.yml has no digest for v0.6.6" in proc.stdout
    assert "docker buildx imagetools inspect docker.io/vllm/vllm-openai:v0.6.6" in proc.stdout


def test_unknown_image_version_lists_the_known_ones(tmp_path: Path):
    proc = render(tmp_path, vllm_container_image_version="v9", vllm_container_weights_paths={})
    assert proc.returncode != 0 and "use one of v0.6.6, v0.9.2, v0.10.2" in proc.stdout


def test_shm_size_when_not_sharing_host_ipc(tmp_path: Path):
    inst = {
        "name": "m-0",
        "model": "m",
        "task": "chat",
        "port": 8600,
        "gpus": [0],
        "vllm_args": ["--port", "8600"],
    }
    proc = render(
        tmp_path,
        vllm_container_image="registry.example/vllm@" + DIGEST,
        vllm_container_instances=[inst],
        vllm_container_weights_paths={"m": "/srv/m"},
        vllm_container_ipc_host=False,
        vllm_container_shm_size="32g",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    unit = (tmp_path / "llmfleet-vllm-m-0.service").read_text()
    assert "--shm-size 32g" in unit and "--ipc host" not in unit
    # No placement for m-0: the container is not pinned rather than pinned wrongly.
    assert "--cpuset-cpus" not in unit
