"""Real state after the nvidia_container_toolkit role, with a local stand-in for NVIDIA's repository
(tests/molecule/fake-nvidia-repo/README.md): pinned package, held, runtime merged into daemon.json."""

import json


def test_pinned_version_installed_not_the_newest(host):
    pkg = host.package("nvidia-container-toolkit")
    assert pkg.is_installed and pkg.version == "1.17.7-1"
    assert "nvidia-container-toolkit" in host.check_output("apt-mark showhold").split()


def test_repository_points_at_the_configured_url(host):
    sources = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    assert "URIs: file:/srv/fake-nvidia-repo" in sources and "Suites: /" in sources


def test_daemon_json_has_the_runtime_and_every_earlier_key(host):
    conf = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert conf["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert conf["data-root"] == "/var/lib/docker"
    assert conf["registry-mirrors"] == ["https://mirror.example.internal"]
    assert conf["default-ulimits"]["nofile"]["Hard"] == 20000
    # container_runtime (a dependency) merged its log limits too.
    assert conf["log-opts"] == {"max-size": "100m", "max-file": "5"}
    assert "default-runtime" not in conf


def test_docker_knows_the_nvidia_runtime(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert "nvidia" in info["Runtimes"]
    assert info["DefaultRuntime"] == "runc"
