"""Real state after the container_runtime role: Docker installed and running, daemon.json merged."""

import json


def test_docker_engine_installed(host):
    assert host.package("docker.io").is_installed


def test_daemon_json_keeps_other_keys_and_adds_log_limits(host):
    conf = json.loads(host.file("/etc/docker/daemon.json").content_string)
    # Keys written before the role ran (prepare.yml) are all still there.
    assert conf["data-root"] == "/var/lib/docker"
    assert conf["registry-mirrors"] == ["https://mirror.example.internal"]
    # Nested merge: the existing log-opts key stays next to ours.
    assert conf["log-opts"] == {"labels": "team", "max-size": "100m", "max-file": "5"}
    assert conf["log-driver"] == "json-file"


def test_docker_running_with_the_merged_config(host):
    service = host.service("docker")
    assert service.is_running and service.is_enabled
    # Docker itself read the file: the logging driver and the registry mirror are live.
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LoggingDriver"] == "json-file"
    assert "https://mirror.example.internal/" in info["RegistryConfig"]["Mirrors"]


def test_old_daemon_json_was_backed_up(host):
    backups = host.check_output("ls /etc/docker/ | grep -c '^daemon.json\\..*~$' || true")
    assert int(backups) == 1
