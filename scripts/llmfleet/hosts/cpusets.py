"""CPU sets: how a host's CPUs are split between instances, and the kernel's list format for them."""

from __future__ import annotations

from collections.abc import Sequence

from llmfleet.errors import PlanError, TopologyError


def split_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """Split CPUs into ``parts`` disjoint, contiguous, near-equal sets (the first sets get the extra)."""
    if parts > len(cpus):
        raise PlanError(
            f"{parts} CPU instances need at least {parts} CPUs; this host offers {len(cpus)}. "
            f"Lower deployment_plan_instances to {len(cpus)} or fewer."
        )
    ordered = sorted(cpus)
    size, extra = divmod(len(ordered), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(ordered[start:end])
        start = end
    return out


def parse_cpulist(text: str) -> list[int]:
    """The kernel's list format (sysfs ``local_cpulist``, nvidia-smi topo -m's CPU Affinity) as a sorted
    list: ``0-3,8,10-11`` -> [0, 1, 2, 3, 8, 10, 11]; empty or ``N/A`` -> []."""
    out: set[int] = set()
    text = text.strip()
    if not text or text.upper() == "N/A":
        return []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise TopologyError(f"cannot read CPU list {text!r} (expected e.g. 0-55,112-167)") from None
    return sorted(out)


def format_cpulist(cpus: Sequence[int]) -> str:
    """CPU ids in the kernel's list format, the inverse of :func:`parse_cpulist`: [0, 1, 2, 5] -> '0-2,5'
    (contiguous runs as ``a-b``; [] -> '')."""
    runs: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)
