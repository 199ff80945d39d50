"""``llmfleet status``: what is deployed here, and whether each instance answers."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from llmfleet.registry import Deployment, load_all


def instance_healthy(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def supervised_pid(supervisorctl: list[str], program: str) -> int | None:
    """The pid supervisord reports for ``program``; None when it is not running or unknown."""
    try:
        proc = subprocess.run([*supervisorctl, "pid", program], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def describe(dep: Deployment) -> dict[str, object]:
    return {
        "model": dep.model,
        "endpoint": dep.endpoint,
        "api_key_file": dep.api_key_file,
        "weights_path": dep.weights_path,
        "revision": dep.plan.revision,
        "instances": [
            {
                "name": inst.name,
                "url": f"{inst.url}/v1",
                "healthy": instance_healthy(inst.url),
                "pid": supervised_pid(dep.supervisorctl, f"vllm-{inst.name}"),
                "cpus": inst.cpus,
                "kv_cache_tokens": inst.kv_cache.tokens,
                "log": str(Path(dep.log_dir) / f"vllm-{inst.name}.log"),
            }
            for inst in dep.plan.instances
        ],
    }


def status(registry_dir: Path) -> list[dict[str, object]]:
    return [describe(dep) for dep in load_all(registry_dir)]
