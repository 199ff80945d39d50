"""Facts about the host this runs on, for preflight and the planner."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from pydantic import BaseModel, ConfigDict, Field


class HostFacts(BaseModel):
    """What preflight learnt about the host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hostname: str
    cpus: list[int] = Field(min_length=1, description="CPU ids this host offers to vLLM")
    memory_bytes: int = Field(gt=0)
    gpu_count: int = Field(ge=0)


NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"]


def parse_nvidia_smi_gpus(csv_text: str) -> list[dict[str, object]]:
    """Parse nvidia-smi --query-gpu=index,name,memory.total,driver_version CSV (noheader, nounits)."""
    gpus = []
    for line in csv_text.strip().splitlines():
        index, name, memory_mib, driver = (part.strip() for part in line.split(","))
        gpus.append({"index": int(index), "name": name, "memory_mib": int(memory_mib), "driver": driver})
    return gpus


def detect_gpus() -> list[dict[str, object]]:
    """GPUs nvidia-smi reports; none when nvidia-smi is absent (a CPU host)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    proc = subprocess.run([smi, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        # nvidia-smi present but failing is a broken driver, not a CPU host: say so.
        raise RuntimeError(
            f"nvidia-smi failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return parse_nvidia_smi_gpus(proc.stdout)


def memory_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def gather() -> tuple[HostFacts, list[dict[str, object]]]:
    gpus = detect_gpus()
    facts = HostFacts(
        hostname=socket.gethostname(),
        # The CPUs this process may run on: honours a cgroup/cpuset limit, unlike os.cpu_count().
        cpus=sorted(os.sched_getaffinity(0)),
        memory_bytes=memory_bytes(),
        gpu_count=len(gpus),
    )
    return facts, gpus
