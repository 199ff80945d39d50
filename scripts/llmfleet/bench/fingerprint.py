"""What a benchmark ran on: hardware, vLLM version and arguments, inventory and code revision.

Two runs are comparable only when their fingerprints say so; ``bench compare`` prints what differs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import urllib.request
from pathlib import Path

from llmfleet.paths import REPO_ROOT

REPO = REPO_ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gpus() -> list[dict[str, str]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(","))
        gpus.append({"name": name, "driver": driver, "memory": memory})
    return gpus


def _git() -> dict[str, object]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def inventory_hash(inventory_dir: Path, extra_vars: dict[str, object] | None = None) -> str:
    """sha256 over every file of the inventory (path and bytes) and the extra-vars a deploy used."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(inventory_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(inventory_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    if extra_vars:
        digest.update(json.dumps(extra_vars, sort_keys=True).encode())
    return digest.hexdigest()


def _vllm_version(instance_url: str | None, vllm_python: str | None) -> str | None:
    if instance_url:
        try:
            with urllib.request.urlopen(instance_url.rstrip("/") + "/version", timeout=5) as resp:
                return str(json.load(resp)["version"])
        except (OSError, ValueError, KeyError):
            pass
    if vllm_python:
        venv = Path(vllm_python).parent.parent
        for dist in sorted(glob.glob(str(venv / "lib" / "python3*" / "site-packages" / "vllm*.dist-info"))):
            name = Path(dist).name.removesuffix(".dist-info")
            return name.split("-", 1)[1] if "-" in name else name
    return None


def deployment_record(registry_dir: Path, model: str) -> dict[str, object] | None:
    path = Path(registry_dir) / f"{model}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fingerprint(
    model: str,
    registry_dir: Path,
    inventory_dir: Path = REPO / "inventories" / "local",
    extra_vars: dict[str, object] | None = None,
) -> dict[str, object]:
    record = deployment_record(registry_dir, model) or {}
    plan = record.get("plan") or {}
    instances = plan.get("instances") or [] if isinstance(plan, dict) else []
    first = instances[0] if instances else {}
    argv = first.get("argv") if isinstance(first, dict) else None
    load1, load5, load15 = os.getloadavg()
    return {
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "gpus": _gpus(),
        "vllm_version": _vllm_version(first.get("url") if first else None, argv[0] if argv else None),
        "vllm_argv": [inst.get("argv") for inst in instances],
        "vllm_env": [inst.get("env") for inst in instances],
        "instances": len(instances),
        "registry_record": str(Path(registry_dir) / f"{model}.json") if record else None,
        "inventory_hash": inventory_hash(inventory_dir, extra_vars),
        "git": _git(),
        "loadavg_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }
