"""The nvidia_driver role's per-distribution choices, rendered by Ansible itself for each supported host.

Only Debian can be a test host here (no Ubuntu mirror is reachable), so the Ubuntu and arm64 paths are
checked the way the issue allows: the role's own defaults/main.yml and vars/main.yml are loaded into a play
whose hosts report Ubuntu / Debian, x86_64 / aarch64 facts (tests/data/ansible-library/fake_facts.py), and
what they select (packages, the CUDA repository's URL and key, the apt pin file) is compared with NVIDIA's
and the distributions' names. The molecule scenarios install the Debian paths for real.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "ansible" / "roles" / "nvidia_driver"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
CUDA = "https://developer.download.nvidia.com/compute/cuda/repos"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the project venv (make venv)")


def facts(distribution: str, version: str, architecture: str = "x86_64") -> dict[str, str]:
    return {"distribution": distribution, "distribution_version": version,
            "distribution_major_version": version.split(".")[0], "architecture": architecture}  # fmt: skip


DEBIAN, JAMMY, NOBLE_ARM = (
    facts("Debian", "12.7"),
    facts("Ubuntu", "22.04"),
    facts("Ubuntu", "24.04", "aarch64"),
)
HOSTS = {
    "debian-distro": (DEBIAN, {}),
    "debian-cuda-open": (DEBIAN, {"nvidia_driver_source": "cuda_repo", "nvidia_driver_branch": "580"}),
    "debian-cuda-proprietary": (DEBIAN, {"nvidia_driver_source": "cuda_repo", "nvidia_driver_branch": "570",
                                         "nvidia_driver_cuda_repo_open_kernel_modules": False}),
    "ubuntu2204-distro": (JAMMY, {"nvidia_driver_branch": "570"}),
    "ubuntu2204-distro-open": (JAMMY, {"nvidia_driver_branch": "580",
                                       "nvidia_driver_ubuntu_open_kernel_modules": True}),
    "ubuntu2404-cuda-arm": (NOBLE_ARM, {"nvidia_driver_source": "cuda_repo", "nvidia_driver_branch": "580",
                                        "nvidia_driver_version": "580.95.05-0ubuntu1"}),
}  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("nvidia-driver-vars")
    inventory = {"all": {"hosts": {name: {"ansible_connection": "local", **extra}
                                   for name, (_, extra) in HOSTS.items()}}}  # fmt: skip
    (tmp / "hosts.yml").write_text(yaml.safe_dump(inventory))
    # The role's defaults as the inventory's group_vars: the lowest precedence, as in the role, so each
    # host's overrides above win (include_vars would override them).
    (tmp / "group_vars").mkdir()
    (tmp / "group_vars" / "all.yml").write_text((ROLE / "defaults" / "main.yml").read_text())
    (tmp / "facts.json").write_text(json.dumps({name: facts for name, (facts, _) in HOSTS.items()}))
    play = [
        {
            "name": "Render nvidia_driver's per-distribution variables",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {"name": "Report this host's facts",
                 "fake_facts": {"facts": "{{ (lookup('file', facts_file) | from_json)[inventory_hostname] }}"}},  # noqa: E501
                {"name": "Load the role's vars",
                 "ansible.builtin.include_vars": str(ROLE / "vars" / "main.yml")},
                {"name": "Render the pin file", "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / "nvidia-driver.pref.j2"),
                    "dest": str(tmp) + "/{{ inventory_hostname }}.pref", "mode": "0644"}},
                {"name": "Write what the role selects", "ansible.builtin.copy": {
                    "dest": str(tmp) + "/{{ inventory_hostname }}.json", "mode": "0644",
                    "content": "{{ {'packages': _nvidia_driver_packages, 'url': _nvidia_driver_cuda_url,"
                               " 'key': _nvidia_driver_cuda_key_url, 'release': _nvidia_driver_release,"
                               " 'supported': _nvidia_driver_release"
                               " in _nvidia_driver_supported[ansible_facts['distribution']]} | to_json }}"}},
            ],
        }
    ]  # fmt: skip
    (tmp / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_LIBRARY": str(REPO / "tests" / "data" / "ansible-library"),
           "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_PYTHON_INTERPRETER": str(REPO / ".venv" / "bin" / "python")}  # fmt: skip
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", str(tmp / "hosts.yml"), str(tmp / "play.yml"),
         "-e", f"facts_file={tmp / 'facts.json'}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return {
        name: {**json.loads((tmp / f"{name}.json").read_text()), "pref": (tmp / f"{name}.pref").read_text()}
        for name in HOSTS
    }


def test_debian_distro_takes_the_non_free_headless_set(rendered):
    host = rendered["debian-distro"]
    assert host["supported"] and host["release"] == "12"
    assert host["packages"] == [
        "nvidia-kernel-dkms",
        "nvidia-smi",
        "nvidia-persistenced",
        "libcuda1",
        "libnvidia-ml1",
    ]
    assert "Pin: version /^([0-9]+:)?535[.]/" in host["pref"] and "Pin-Priority: 1001" in host["pref"]


def test_debian_cuda_repo_takes_nvidias_compute_only_packages(rendered):
    host = rendered["debian-cuda-open"]
    assert host["packages"] == ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"]
    assert host["url"] == f"{CUDA}/debian12/x86_64/" and host["key"] == f"{CUDA}/debian12/x86_64/3bf863cc.pub"
    assert "Pin: version /^([0-9]+:)?580[.]/" in host["pref"]
    proprietary = rendered["debian-cuda-proprietary"]
    assert proprietary["packages"] == ["nvidia-driver-cuda", "nvidia-kernel-dkms", "nvidia-persistenced"]
    assert "Pin: version /^([0-9]+:)?570[.]/" in proprietary["pref"]


def test_ubuntu_distro_takes_the_server_branch(rendered):
    host = rendered["ubuntu2204-distro"]
    assert host["supported"] and host["release"] == "22.04"
    assert host["packages"] == ["nvidia-headless-570-server", "nvidia-utils-570-server"]
    assert rendered["ubuntu2204-distro-open"]["packages"] == [
        "nvidia-headless-580-server-open",
        "nvidia-utils-580-server",
    ]


def test_ubuntu_cuda_repo_on_arm64_uses_sbsa_and_an_exact_version_pin(rendered):
    host = rendered["ubuntu2404-cuda-arm"]
    assert host["supported"] and host["release"] == "24.04"
    assert host["packages"] == ["nvidia-headless-580-open", "nvidia-utils-580"]
    assert host["url"] == f"{CUDA}/ubuntu2404/sbsa/" and host["key"] == f"{CUDA}/ubuntu2404/sbsa/3bf863cc.pub"
    assert "Pin: version /^([0-9]+:)?580[.]95[.]05-0ubuntu1$/\n" in host["pref"]
