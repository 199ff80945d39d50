"""A CPU host is the unit of the memory budget and of the CPU sets: every model deployed on it draws on
the same budget and the same CPUs. :func:`held_on_host` sums what the host's other deployments hold; the
host planner (llmfleet.deploy.plan) checks a model's plan against it and keeps its CPU sets apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.capacity.modelconfig import from_catalog
from llmfleet.capacity.params import model_weight_bytes
from llmfleet.catalog.models import Architecture, Catalog, ModelEntry
from llmfleet.errors import PlanError
from llmfleet.hosts.cpusets import format_cpulist, split_cpus
from llmfleet.hosts.facts import HostFacts

if TYPE_CHECKING:
    from llmfleet.deploy.plan import DeploymentSettings, ModelPlan

GIB = 1024**3


class Held(BaseModel):
    """What the other models deployed on a CPU host hold (:func:`held_on_host`): the host is the unit of
    the memory budget and of the CPU sets, so a model's plan takes them into account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_bytes: int = Field(default=0, ge=0)
    cpus: list[int] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)


def weights_bytes(arch: Architecture, dtype: str) -> int:
    """Parameter bytes of the model in memory, for the memory check: the capacity planner's count
    (:func:`llmfleet.capacity.params.model_weight_bytes`) on the catalog's architecture."""
    arch_ = from_catalog(arch, dtype)
    return model_weight_bytes(arch_, arch_.quantization, dtype)


def held_on_host(plans: Iterable[ModelPlan], catalog: Catalog, except_model: str) -> Held:
    """Memory and CPUs that the deployed CPU plans of models other than ``except_model`` hold: per
    instance, the model's weights and the instance's KV cache space, and its CPU set. ``except_model``'s
    own record is left out, so a redeploy does not count its old plan beside its new one. A model the
    catalog no longer lists counts its KV cache only (its weights are unknown)."""
    memory, cpus, models = 0, set(), []
    for plan in sorted(plans, key=lambda p: p.model):
        if plan.model == except_model or plan.profile != "cpu" or not plan.instances:
            continue
        entry = catalog.models.get(plan.model)
        weights = weights_bytes(entry.architecture, entry.serving.dtype) if entry else 0
        for inst in plan.instances:
            memory += weights + inst.kv_cache.space_bytes
            cpus.update(inst.cpus)
        models.append(plan.model)
    return Held(memory_bytes=memory, cpus=sorted(cpus), models=models)


def instance_bytes(entry: ModelEntry, settings: DeploymentSettings) -> int:
    return weights_bytes(entry.architecture, entry.serving.dtype) + settings.kv_cache_gib * GIB


def memory_budget(host: HostFacts, settings: DeploymentSettings) -> int:
    return int(host.memory_bytes * settings.memory_budget_fraction)


def check_memory(
    name: str, entry: ModelEntry, host: HostFacts, settings: DeploymentSettings, held: Held
) -> None:
    """The host's memory budget holds this model's instances and what other models hold already."""
    need = settings.instances * instance_bytes(entry, settings)
    budget = memory_budget(host, settings)
    if need + held.memory_bytes <= budget:
        return
    mine = f"{settings.instances} instance(s) of {name} need {need / GIB:.1f} GiB (weights + KV cache)"
    if not held.memory_bytes:
        raise PlanError(
            f"{mine} but the budget on {host.hostname} is {budget / GIB:.1f} GiB; lower "
            "deployment_plan_instances or deployment_plan_kv_cache_gib"
        )
    raise PlanError(
        f"{mine} and the other models on {host.hostname} ({', '.join(held.models)}) hold "
        f"{held.memory_bytes / GIB:.1f} GiB: {(need + held.memory_bytes) / GIB:.1f} GiB in all, over the "
        f"host's budget of {budget / GIB:.1f} GiB ({settings.memory_budget_fraction} of its memory); lower "
        "deployment_plan_instances or deployment_plan_kv_cache_gib, undeploy another model, or raise "
        "deployment_plan_memory_budget_fraction"
    )


def cpu_sets(name: str, host: HostFacts, settings: DeploymentSettings, held: Held) -> list[list[int]]:
    """This model's CPU sets: disjoint from each other and, where the host has enough CPUs, from the
    CPUs other models hold; otherwise shared with them only when deployment_plan_share_cpus says so."""
    count, per = settings.instances, settings.cpus_per_instance
    if per and count * per > len(host.cpus):
        raise PlanError(
            f"{count} instance(s) of {name} at {per} CPUs each need {count * per} CPUs; {host.hostname} "
            f"offers {len(host.cpus)}. Lower deployment_plan_cpus_per_instance or deployment_plan_instances"
        )
    taken = set(held.cpus)
    free = [c for c in sorted(host.cpus) if c not in taken]
    held_here = [c for c in sorted(host.cpus) if c in taken]
    if len(free) >= max(count, count * per) or not held_here:
        # (With no CPU held by another model, split_cpus refuses more instances than CPUs itself.)
        return split_cpus(free[: count * per] if per else free, count)
    if not settings.share_cpus:
        raise PlanError(
            f"{count} instance(s) of {name} need {max(count, count * per)} CPUs that no other model holds; "
            f"{host.hostname} has {len(host.cpus)} and {', '.join(held.models)} hold "
            f"{format_cpulist(held_here)}. Set deployment_plan_share_cpus to true to share them, or give the "
            "other models fewer CPUs (deployment_plan_cpus_per_instance) and redeploy them"
        )
    if not per:
        return split_cpus(host.cpus, count)
    # Shared: the free CPUs first, then as few of the held ones as make up the count.
    return split_cpus(sorted(free + held_here[: count * per - len(free)]), count)
