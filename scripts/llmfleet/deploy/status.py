"""``llmfleet status``: what is deployed here, and whether each instance answers."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from llmfleet.deploy.registry import Deployment, load_all


def instance_healthy(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip()


def parse_pid(text: str) -> int | None:
    """supervisorctl pid and systemctl show print 0 (or nothing) for a process that is not running."""
    return int(text) if text.isdigit() and int(text) > 0 else None


def service_pid(manager: str, service: str, supervisorctl: list[str]) -> int | None:
    """The main pid of a supervisord program or systemd unit; None when it is not running."""
    if manager == "systemd":
        return parse_pid(_run(["systemctl", "show", "--property=MainPID", "--value", service]))
    return parse_pid(_run([*supervisorctl, "pid", service]))


def service_name(manager: str, instance: str) -> str:
    """How llmfleet names an instance's service: llmfleet-vllm-<i>.service, or program vllm-<i>."""
    return f"llmfleet-vllm-{instance}.service" if manager == "systemd" else f"vllm-{instance}"


def instance_pid(dep: Deployment, instance: str) -> int | None:
    return service_pid(dep.service_manager, service_name(dep.service_manager, instance), dep.supervisorctl)


def describe(dep: Deployment) -> dict[str, object]:
    return {
        "model": dep.model,
        "endpoint": dep.endpoint,
        "api_key_file": dep.api_key_file,
        "weights_path": dep.weights_path,
        "revision": dep.plan.revision,
        "service_manager": dep.service_manager,
        "instances": [
            {
                "name": inst.name,
                "url": f"{inst.url}/v1",
                "healthy": instance_healthy(inst.url),
                "pid": instance_pid(dep, inst.name),
                "cpus": inst.cpus,
                "kv_cache_tokens": inst.kv_cache.tokens,
                "log": str(Path(dep.log_dir) / f"vllm-{inst.name}.log"),
            }
            for inst in dep.plan.instances
        ],
    }


def status(registry_dir: Path) -> list[dict[str, object]]:
    return [describe(dep) for dep in load_all(registry_dir)]
