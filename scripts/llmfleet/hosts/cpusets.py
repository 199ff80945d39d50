"""CPU sets: how a host's CPUs are split between instances, and the kernel's list format for them."""

from __future__ import annotations

from llmfleet.errors import PlanError


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


def cpu_list(cpus: list[int]) -> str:
    """Render CPU ids as the kernel's list format: [0, 1, 2, 5] -> '0-2,5'."""
    ranges: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)
