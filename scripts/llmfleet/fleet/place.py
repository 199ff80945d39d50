"""Place every wanted instance of every model on a node of the fleet, and its GPUs.

Pure: the fleet file, the catalogs and the previous placement in, the placement out; the same input gives
the same placement. The rules:

- What the previous placement has stays where it is (same node, GPUs, port and name) while its node is
  in the fleet and not drained, and its model still wants it; ``rebalance`` places everything afresh.
  Scaling down drops a model's highest-numbered instances first.
- New instances go, largest first, to the node the policy picks among those with room: ``binpack`` (the
  default) fills the fullest node that fits, keeping whole nodes free for large models; ``spread`` puts
  each on the node with the fewest instances of its model, then the emptiest. A model that runs on both
  goes to GPU nodes before CPU nodes.
- Instance names are ``<model>-<n>`` with ``n`` unique across the fleet, so a name says one instance
  wherever it runs; a new instance takes the lowest free ``n``.
- When an instance fits no node the placement is refused, naming the model, every node considered with
  why it does not fit, and the nearest fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.capacity.placement import RenderedInstance
from llmfleet.catalog.gpus import GpuCatalog
from llmfleet.catalog.models import Catalog
from llmfleet.errors import FleetError
from llmfleet.fleet.shapes import GIB, NodeKind, Shape, node_kind, shape, shape_key
from llmfleet.fleet.spec import FleetSpec
from llmfleet.hosts.cpusets import format_cpulist

# Instance ports a node may use from its base_port on: the host firewall's range.
PORTS_PER_NODE = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlacedInstance(_Strict):
    """One instance in the placement. GPU nodes: its port and GPUs; CPU nodes leave the port to the host
    planner (deployment_plan), which also pins its CPUs."""

    name: str
    model: str
    port: int | None = None
    gpus: list[int] = Field(default_factory=list)
    numa_node: int | None = None


class NodePlan(_Strict):
    profile: Literal["gpu", "cpu"]
    describe: str
    gpu: str | None = None
    gpu_count: int = 0
    drained: bool
    instances: list[PlacedInstance]
    gpus_free: int = 0
    memory_free_gib: float | None = None
    address: str | None = None
    base_port: int = 8100


class FleetPlacement(_Strict):
    policy: Literal["binpack", "spread"]
    nodes: dict[str, NodePlan]
    # GPU nodes: each instance as the vllm_container role and the GPU preflight read it (capacity render's
    # schema), and the planned share of every GPU.
    rendered: dict[str, list[RenderedInstance]] = Field(default_factory=dict)

    def replicas(self, model: str) -> int:
        return sum(1 for n in self.nodes.values() for i in n.instances if i.model == model)


@dataclass
class _Node:
    name: str
    kind: NodeKind
    base_port: int
    drained: bool
    share_cpus: bool
    memory_budget: int
    free_gpus: set[int] = field(default_factory=set)
    memory_used: int = 0
    cpus_used: int = 0
    instances: list[PlacedInstance] = field(default_factory=list)

    def fill(self) -> float:
        """How full the node is, 0..1: the share of its GPUs (or of its memory budget) taken."""
        if self.kind.profile == "gpu":
            return 1 - len(self.free_gpus) / max(self.kind.gpu_count, 1)
        return self.memory_used / max(self.memory_budget, 1)

    def gpus_for(self, count: int, binpack: bool) -> list[int] | None:
        """``count`` free GPUs on one NUMA node (the fullest that fits when binpacking, else the emptiest);
        an instance larger than a NUMA node takes the lowest free GPUs of the node."""
        fitting = []
        for gpus in self.kind.numa_gpus:
            free = sorted(set(gpus) & self.free_gpus)
            if len(free) >= count:
                fitting.append((len(free), free))
        if fitting:
            fitting.sort(key=lambda f: (f[0] if binpack else -f[0], f[1][0]))
            return fitting[0][1][:count]
        if count > len(self.kind.numa_gpus[0]) and len(self.free_gpus) >= count:
            return sorted(self.free_gpus)[:count]
        return None

    def room_for(self, need: Shape) -> str | None:
        """None when ``need`` fits; else what is short."""
        if len(self.instances) >= PORTS_PER_NODE:
            return f"has {PORTS_PER_NODE} instances, all the ports from its base_port on"
        if self.kind.profile == "gpu":
            if self.gpus_for(need.gpus, True) is None:
                return f"needs {need.gpus} free GPU(s) on one NUMA node, has {len(self.free_gpus)} free"
            return None
        left = self.memory_budget - self.memory_used
        if need.memory_bytes > left:
            return f"needs {need.memory_bytes / GIB:.1f} GiB, {left / GIB:.1f} GiB of its budget left"
        if not self.share_cpus and self.cpus_used + need.cpus > self.kind.cpus:
            return f"needs {need.cpus} CPU(s), {self.kind.cpus - self.cpus_used} free (share_cpus is off)"
        return None

    def port(self) -> int:
        taken = {i.port for i in self.instances}
        port = self.base_port
        while port in taken:
            port += 1
        return port

    def claim(self, inst: PlacedInstance, need: Shape) -> None:
        self.free_gpus -= set(inst.gpus)
        self.memory_used += need.memory_bytes
        self.cpus_used += need.cpus
        self.instances.append(inst)


_ORDINAL = re.compile(r"^(?P<model>.+)-(?P<n>\d+)$")


def _ordinal(name: str) -> int:
    m = _ORDINAL.match(name)
    return int(m.group("n")) if m else -1


def place_fleet(
    spec: FleetSpec,
    catalog: Catalog,
    gpus: GpuCatalog,
    spec_dir: Path,
    previous: dict[str, list[PlacedInstance]] | None = None,
    rebalance: bool = False,
) -> FleetPlacement:
    nodes = {
        name: _Node(
            name=name,
            kind=(kind := node_kind(name, node, gpus, spec_dir)),
            base_port=node.base_port,
            drained=node.drained,
            share_cpus=node.share_cpus,
            memory_budget=int(kind.memory_bytes * node.memory_budget_fraction),
            free_gpus=set(range(kind.gpu_count)),
        )
        for name, node in sorted(spec.nodes.items())
    }
    shapes: dict[tuple[str, str], Shape | str] = {}

    def need(model: str, node: _Node) -> Shape | str:
        key = (model, shape_key(node.kind))
        if key not in shapes:
            shapes[key] = shape(model, spec.models[model], node.kind, catalog, gpus, spec_dir)
        return shapes[key]

    for model, want in spec.models.items():
        if not want.config:
            catalog.get(model)  # an unknown model fails here, naming the catalog's models
    if not rebalance:
        _keep(spec, nodes, previous or {}, need)
    # The hardest to place first: the most GPUs an instance needs where it needs the fewest.
    order = sorted(spec.models, key=lambda m: (-_fewest_gpus(m, nodes, need), m))
    for model in order:
        want = spec.models[model].replicas
        have = sum(1 for n in nodes.values() for i in n.instances if i.model == model)
        used = {_ordinal(i.name) for n in nodes.values() for i in n.instances if i.model == model}
        for k in range(have, want):
            node = _pick(model, nodes, need, spec.policy)
            if node is None:
                raise FleetError(_refusal(model, k + 1, want, nodes, need))
            fit = need(model, node)
            assert isinstance(fit, Shape)
            n = next(i for i in range(len(used) + 1) if i not in used)
            used.add(n)
            inst = PlacedInstance(name=f"{model}-{n}", model=model)
            if node.kind.profile == "gpu":
                chosen = node.gpus_for(fit.gpus, spec.policy == "binpack")
                assert chosen is not None
                inst = inst.model_copy(
                    update={"port": node.port(), "gpus": chosen, "numa_node": node.kind.numa_of(chosen[0])}
                )
            node.claim(inst, fit)
    return _result(spec, nodes, need)


def _fewest_gpus(model: str, nodes: dict[str, _Node], need) -> int:  # type: ignore[no-untyped-def]
    sizes = [s.gpus for n in nodes.values() if isinstance(s := need(model, n), Shape) and s.gpus]
    return min(sizes, default=0)


def _keep(spec: FleetSpec, nodes: dict[str, _Node], previous: dict[str, list[PlacedInstance]], need) -> None:  # type: ignore[no-untyped-def]
    """Claim what the previous placement had, where it can stay; the lowest-numbered first."""
    kept: dict[str, int] = {}
    candidates = sorted(
        ((inst, nodes[host]) for host, insts in previous.items() if host in nodes for inst in insts),
        key=lambda pair: (pair[0].model, _ordinal(pair[0].name), pair[1].name),
    )
    for inst, node in candidates:
        want = spec.models.get(inst.model)
        if want is None or node.drained or kept.get(inst.model, 0) >= want.replicas:
            continue
        fit = need(inst.model, node)
        if not isinstance(fit, Shape):
            continue
        if node.kind.profile == "gpu":
            if len(inst.gpus) != fit.gpus or not set(inst.gpus) <= node.free_gpus or inst.port is None:
                continue
            if inst.port in {i.port for i in node.instances}:
                continue
        elif node.room_for(fit) is not None:
            continue
        node.claim(inst, fit)
        kept[inst.model] = kept.get(inst.model, 0) + 1


def _pick(model: str, nodes: dict[str, _Node], need, policy: str) -> _Node | None:  # type: ignore[no-untyped-def]
    options = []
    for node in nodes.values():
        fit = need(model, node)
        if node.drained or not isinstance(fit, Shape) or node.room_for(fit) is not None:
            continue
        mine = sum(1 for i in node.instances if i.model == model)
        # GPU nodes before CPU nodes; then the policy; then the smaller GPU (the large ones stay free for
        # the models that need them); then the name, so that ties are decided the same way every time.
        gpu_first = 0 if node.kind.profile == "gpu" else 1
        size = node.kind.gpu_memory_mib
        if policy == "binpack":
            options.append(((gpu_first, -node.fill(), size, node.name), node))
        else:
            options.append(((gpu_first, mine, node.fill(), size, node.name), node))
    return min(options, key=lambda o: o[0])[1] if options else None


def _refusal(model: str, k: int, want: int, nodes: dict[str, _Node], need) -> str:  # type: ignore[no-untyped-def]
    reasons, nearest = [], None
    for node in nodes.values():
        fit = need(model, node)
        if node.drained:
            why = "drained"
        elif isinstance(fit, str):
            why = fit
        else:
            why = node.room_for(fit) or "fits"
            short = (fit.gpus - len(node.free_gpus)) if node.kind.profile == "gpu" else 0
            if nearest is None or (short, node.fill()) < nearest[0]:
                nearest = ((short, node.fill()), node.name, why)
        reasons.append(f"{node.name} ({node.kind.describe()}: {why})")
    near = f" Nearest fit: {nearest[1]}, which {nearest[2]}." if nearest else ""
    return (
        f"fleet: model {model}: instance {k} of {want} fits no node. Nodes considered: "
        f"{'; '.join(reasons)}.{near} Lower models.{model}.replicas to {k - 1} "
        "(llmfleet fleet scale), add a node (llmfleet fleet add-node), or undrain one"
    )


def _result(spec: FleetSpec, nodes: dict[str, _Node], need) -> FleetPlacement:  # type: ignore[no-untyped-def]
    plans, rendered = {}, {}
    for name, node in nodes.items():
        insts = sorted(node.instances, key=lambda i: (i.model, _ordinal(i.name)))
        plans[name] = NodePlan(
            profile=node.kind.profile,  # type: ignore[arg-type]
            describe=node.kind.describe(),
            gpu=node.kind.gpu,
            gpu_count=node.kind.gpu_count,
            address=spec.nodes[name].address,
            base_port=node.base_port,
            drained=node.drained,
            instances=insts,
            gpus_free=len(node.free_gpus),
            memory_free_gib=(
                round((node.memory_budget - node.memory_used) / GIB, 2)
                if node.kind.profile == "cpu"
                else None
            ),
        )
        if node.kind.profile == "gpu":
            rendered[name] = [_rendered(i, need(i.model, node), node.kind) for i in insts]
    return FleetPlacement(policy=spec.policy, nodes=plans, rendered=rendered)


def _rendered(inst: PlacedInstance, fit: Shape, kind: NodeKind) -> RenderedInstance:
    template = fit.template
    assert template is not None and inst.port is not None and inst.numa_node is not None
    cpus = sorted({c for g in inst.gpus for c in kind.gpu_cpus[g]})
    args = list(template.vllm_args)
    args[args.index("--port") + 1] = str(inst.port)
    placed = template.model_copy(
        update={
            "name": inst.name,
            "port": inst.port,
            "gpus": inst.gpus,
            "numa_node": inst.numa_node,
            "cpus": cpus,
            "vllm_args": args,
        }
    )
    return RenderedInstance(
        **placed.model_dump(),
        cuda_visible_devices=",".join(map(str, inst.gpus)),
        cpu_list=format_cpulist(cpus),
        kv_cache_bytes_per_token=fit.kv_cache_bytes_per_token,
    )


def gpu_shares(instances: list[RenderedInstance], gpu_count: int) -> dict[str, float]:
    """The planned share of every GPU of a node: the utilization of the instance on it, 0 when free."""
    shares = dict.fromkeys(range(gpu_count), 0.0)
    for inst in instances:
        for g in inst.gpus:
            shares[g] = round(shares[g] + inst.gpu_memory_utilization, 4)
    return {str(g): share for g, share in shares.items()}
