"""What one instance of a model takes on one kind of node: GPUs (from the capacity planner, on that node's
GPU type and count) or memory and CPUs (a CPU node), or why it cannot run there at all.

Every node of the same description gives the same shape, so shapes are worked out once per (model, node
kind) and cached by the placer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmfleet.capacity.candidates import plan_capacity
from llmfleet.capacity.modelconfig import ModelArch, ModelSource, from_catalog, load_model
from llmfleet.capacity.options import PlanOptions
from llmfleet.capacity.placement import InstancePlacement
from llmfleet.catalog.gpus import GpuCatalog
from llmfleet.catalog.models import Catalog
from llmfleet.deploy.cpuhost import weights_bytes
from llmfleet.errors import CapacityError, FleetError, LlmfleetError
from llmfleet.fleet.spec import ModelWant, Node
from llmfleet.hosts.cpusets import split_cpus
from llmfleet.hosts.topology import GpuTopology

GIB = 1024**3


@dataclass(frozen=True)
class NodeKind:
    """A node as the placer sees it: its GPUs by NUMA node and the CPU cores nearest each GPU."""

    profile: str
    gpu: str | None
    numa_gpus: tuple[tuple[int, ...], ...]
    gpu_cpus: tuple[tuple[int, ...], ...]  # per GPU index
    cpus: int
    memory_bytes: int
    gpu_memory_mib: int = 0

    @property
    def gpu_count(self) -> int:
        return sum(len(g) for g in self.numa_gpus)

    def numa_of(self, gpu: int) -> int:
        return next(n for n, gpus in enumerate(self.numa_gpus) if gpu in gpus)

    def describe(self) -> str:
        if self.profile == "cpu":
            return f"CPU node, {self.cpus} CPUs, {self.memory_bytes / GIB:.0f} GiB"
        return f"{self.gpu_count} x {self.gpu}"


@dataclass(frozen=True)
class Shape:
    """One instance's needs. GPU nodes: ``gpus`` whole GPUs and the capacity planner's instance as the
    template; CPU nodes: ``memory_bytes`` and ``cpus``."""

    gpus: int = 0
    memory_bytes: int = 0
    cpus: int = 0
    template: InstancePlacement | None = None
    kv_cache_bytes_per_token: int = 0
    tp: int = 1
    pp: int = 1


def node_kind(name: str, node: Node, gpus: GpuCatalog, spec_dir: Path) -> NodeKind:
    if node.profile == "cpu":
        assert node.memory_gib is not None
        return NodeKind("cpu", None, (), (), node.cpus, int(node.memory_gib * GIB))
    if node.facts:
        return _kind_from_facts(name, spec_dir / node.facts, gpus)
    gpu, count, cpus = node.gpu, node.gpus, node.cpus
    if node.instance_type:
        itype = gpus.aws_instance_types.get(node.instance_type)
        if itype is None:
            raise FleetError(
                f"nodes.{name}.instance_type {node.instance_type!r} is not in catalog/gpus.yml; known: "
                f"{', '.join(sorted(gpus.aws_instance_types))}"
            )
        gpu, count, cpus = itype.gpu, itype.gpu_count, node.cpus or itype.vcpus
    assert gpu is not None and count is not None
    if gpu not in gpus.gpus:
        raise FleetError(
            f"nodes.{name}.gpu {gpu!r} is not in catalog/gpus.yml; known: {', '.join(gpus.gpus)}"
        )
    if count % node.numa_nodes or cpus % node.numa_nodes:
        raise FleetError(f"nodes.{name}: gpus ({count}) and cpus ({cpus}) must be multiples of numa_nodes")
    per = count // node.numa_nodes
    numa_gpus = tuple(tuple(range(n * per, (n + 1) * per)) for n in range(node.numa_nodes))
    cores_per_numa = cpus // node.numa_nodes
    numa_cpus = [list(range(n * cores_per_numa, (n + 1) * cores_per_numa)) for n in range(node.numa_nodes)]
    cores = _cores_per_gpu(numa_gpus, numa_cpus, count)
    return NodeKind("gpu", gpu, numa_gpus, cores, cpus, 0, gpus.gpus[gpu].memory_mib)


def _cores_per_gpu(
    numa_gpus: tuple[tuple[int, ...], ...], numa_cpus: list[list[int]], count: int
) -> tuple[tuple[int, ...], ...]:
    """Each GPU's own slice of its NUMA node's cores, so that an instance's cores depend on its GPUs only
    (a kept instance keeps its cores when others come and go)."""
    out: list[tuple[int, ...]] = [() for _ in range(count)]
    for gpus, cores in zip(numa_gpus, numa_cpus, strict=True):
        if not cores or not gpus:
            continue
        # Fewer cores than GPUs: the GPUs share the NUMA node's cores.
        slices = [cores] * len(gpus) if len(cores) < len(gpus) else split_cpus(cores, len(gpus))
        for gpu, part in zip(gpus, slices, strict=True):
            out[gpu] = tuple(part)
    return tuple(out)


def _kind_from_facts(name: str, path: Path, catalog: GpuCatalog) -> NodeKind:
    try:
        topo = GpuTopology.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetError(f"nodes.{name}.facts: cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise FleetError(f"nodes.{name}.facts: {path} is not `llmfleet gpu-facts` output ({first})") from None
    names = {g.catalog_name for g in topo.gpus}
    if len(names) != 1 or None in names:
        raise FleetError(
            f"nodes.{name}.facts: {path} lists GPUs {sorted(str(n) for n in names)}; the placer needs "
            "one GPU type that catalog/gpus.yml knows per node"
        )
    if sorted(topo.indexes()) != list(range(len(topo.gpus))):
        raise FleetError(f"nodes.{name}.facts: GPU indexes {topo.indexes()} are not 0..{len(topo.gpus) - 1}")
    numa = sorted(topo.numa_nodes, key=lambda n: n.node) or []
    numa_gpus = tuple(tuple(sorted(n.gpus)) for n in numa if n.gpus) or (tuple(topo.indexes()),)
    numa_cpus = [sorted(n.cpus) for n in numa if n.gpus] or [[]]
    cpus = sum(len(c) for c in numa_cpus)
    gpu = str(names.pop())
    cores = _cores_per_gpu(numa_gpus, numa_cpus, len(topo.gpus))
    return NodeKind("gpu", gpu, numa_gpus, cores, cpus, 0, catalog.gpus[gpu].memory_mib)


def _architecture(
    model: str, want: ModelWant, catalog: Catalog, spec_dir: Path
) -> tuple[ModelArch, ModelSource, int, str]:
    """The model's architecture, its max_model_len and the --dtype to plan with. A catalog model is planned
    at the catalog's max_model_len and dtype: the catalog fixes what the model outputs, and the host
    planner refuses an instance that disagrees."""
    if want.config:
        arch, source = load_model(spec_dir / want.config)
        arch = arch.model_copy(update={"name": model})
        return arch, source, want.max_model_len or arch.max_position_embeddings, "auto"
    entry = catalog.get(model)
    if want.max_model_len and want.max_model_len != entry.serving.max_model_len:
        raise FleetError(
            f"models.{model}.max_model_len {want.max_model_len}: catalog/models.yml fixes it at "
            f"{entry.serving.max_model_len} for this model; remove it from the fleet file"
        )
    arch = from_catalog(entry.architecture, entry.serving.dtype, model)
    source = ModelSource(config_path=f"catalog/models.yml#{model}")
    dtype = entry.serving.dtype if entry.serving.dtype in ("bfloat16", "float16") else "auto"
    return arch, source, entry.serving.max_model_len, dtype


def shape(
    model: str, want: ModelWant, kind: NodeKind, catalog: Catalog, gpus: GpuCatalog, spec_dir: Path
) -> Shape | str:
    """The shape of one instance of ``model`` on ``kind``, or why it cannot run there."""
    profiles = ["gpu"] if want.config else list(catalog.get(model).profiles)
    if want.profile and want.profile != kind.profile:
        return f"models.{model}.profile is {want.profile}"
    if kind.profile not in profiles:
        return f"the catalog gives {model} no {kind.profile} profile"
    if kind.profile == "cpu":
        entry = catalog.get(model)
        memory = weights_bytes(entry.architecture, entry.serving.dtype) + want.kv_cache_gib * GIB
        return Shape(memory_bytes=memory, cpus=want.cpus_per_instance)
    arch, source, max_len, dtype = _architecture(model, want, catalog, spec_dir)
    try:
        plan = plan_capacity(
            arch,
            source,
            PlanOptions(
                gpu=kind.gpu or "",
                gpus_per_node=kind.gpu_count,
                max_model_len=max_len,
                dtype=dtype,
                gpu_memory_utilization=want.gpu_memory_utilization,
                tp=want.tp,
                pp=want.pp,
                numa_nodes=len(kind.numa_gpus) if kind.gpu_count % len(kind.numa_gpus) == 0 else 1,
            ),
            gpus,
        )
    except (CapacityError, ValueError) as exc:
        return f"does not fit a {kind.describe()} node: {str(exc).splitlines()[0]}"
    except LlmfleetError as exc:  # pragma: no cover - a catalog problem, reported as is
        raise FleetError(f"models.{model}: {exc}") from None
    assert plan.chosen is not None
    chosen = plan.candidates[plan.chosen]
    template = plan.nodes[0].instances[0]
    return Shape(
        gpus=chosen.gpus_per_instance,
        template=template,
        kv_cache_bytes_per_token=plan.kv_cache_bytes_per_token if template.expected_kv_cache_tokens else 0,
        tp=chosen.tp,
        pp=chosen.pp,
    )


def shape_key(kind: NodeKind) -> str:
    return json.dumps(
        [kind.profile, kind.gpu, kind.numa_gpus, kind.cpus, kind.memory_bytes, kind.gpu_memory_mib]
    )
