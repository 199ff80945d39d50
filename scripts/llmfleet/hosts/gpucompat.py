"""GPU preflight: is this host's driver, GPU set and free memory right for the image and the plan?

The compatibility matrix is data (``images/compat.yml``): image version -> CUDA version -> minimum driver.
Every check is a pure function of parsed facts (:class:`llmfleet.hosts.topology.GpuTopology`) and returns
refusals; each refusal says what is wrong and what to do about it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmfleet.errors import CompatError, TopologyError, yaml_problem
from llmfleet.hosts.topology import GpuTopology, format_cpulist, placement
from llmfleet.paths import REPO_ROOT

DEFAULT_COMPAT = REPO_ROOT / "images" / "compat.yml"
MIB = 1024 * 1024


# A digest is filled in from public repositories that pin it (no registry is reachable where the table is
# kept): at least this many independent sources must agree (images/compat.yml says why that is safe).
MIN_DIGEST_SOURCES = 2


class ImageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: str
    cuda: str = Field(pattern=r"^\d+\.\d+$")
    digest: str = Field(pattern=r"^(sha256:[0-9a-f]{64})?$")
    # What the digest names: the multi-platform image index, or one platform's manifest.
    digest_kind: Literal["", "index", "linux/amd64"] = ""
    # Where the digest came from (repository, path, commit), one entry per source.
    digest_source: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _digest_has_provenance(self) -> ImageEntry:
        if self.digest:
            if not self.digest_kind:
                raise ValueError("a digest needs digest_kind (index or linux/amd64)")
            if len(set(self.digest_source)) < MIN_DIGEST_SOURCES:
                raise ValueError(
                    f"a digest needs at least {MIN_DIGEST_SOURCES} digest_source entries "
                    "(independent repositories that pin it for this tag), each different"
                )
            # Each source must say which digest it pins, so a source copied from another tag's entry, or
            # one that pins another digest, is caught here rather than trusted.
            short = self.digest.removeprefix("sha256:")[:8]
            vague = [source for source in self.digest_source if short not in source]
            if vague:
                raise ValueError(
                    f"every digest_source entry must quote the digest it pins (at least {short}...): "
                    + "; ".join(repr(source) for source in vague)
                )
        elif self.digest_kind:
            raise ValueError("digest_kind is set but the digest is empty")
        return self


class CompatMatrix(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1]
    cuda_min_driver: dict[str, str]
    images: dict[str, ImageEntry]

    def image(self, version: str) -> ImageEntry:
        try:
            return self.images[version]
        except KeyError:
            raise CompatError(
                f"image version {version!r} is not in images/compat.yml "
                f"(known: {', '.join(self.known_versions())}). Add it with the CUDA version from vLLM's "
                "docker/Dockerfile at that tag, or use a known version."
            ) from None

    def known_versions(self) -> list[str]:
        """Image versions, oldest first (v0.9.2 before v0.10.2)."""

        def key(version: str) -> tuple[tuple[int, ...], str]:
            numbers = re.match(r"v?(\d+(?:\.\d+)*)", version)
            return (tuple(int(n) for n in numbers.group(1).split(".")) if numbers else (), version)

        return sorted(self.images, key=key)

    def min_driver(self, cuda: str) -> str:
        try:
            return self.cuda_min_driver[cuda]
        except KeyError:
            raise CompatError(
                f"CUDA {cuda} has no minimum driver in images/compat.yml; add it from NVIDIA's CUDA Toolkit "
                "release notes (table 'CUDA Toolkit and Corresponding Driver Versions')"
            ) from None


def load_compat(path: Path | str = DEFAULT_COMPAT) -> CompatMatrix:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        matrix = CompatMatrix.model_validate(raw)
    except OSError as exc:
        raise CompatError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise CompatError(f"{path} is not valid YAML: {yaml_problem(exc)}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CompatError(f"{path} is invalid: {problems}") from None
    for image, entry in matrix.images.items():
        matrix.min_driver(entry.cuda)  # every image's CUDA must have a driver floor
        del image
    return matrix


def version_tuple(version: str) -> tuple[int, ...]:
    """``550.54.14`` -> (550, 54, 14); compares as numbers, not strings ('10' > '8')."""
    try:
        return tuple(int(p) for p in version.strip().split("."))
    except ValueError:
        raise CompatError(f"{version!r} is not a dotted version number") from None


class Refusal(BaseModel):
    model_config = ConfigDict(frozen=True)

    check: str
    message: str


def check_driver(matrix: CompatMatrix, image_version: str, topology: GpuTopology) -> list[Refusal]:
    """The host driver must be at least the minimum for the image's CUDA version."""
    entry = matrix.image(image_version)
    need = matrix.min_driver(entry.cuda)
    have = topology.driver_version
    out = []
    if version_tuple(have) < version_tuple(need):
        out.append(
            Refusal(
                check="driver",
                message=(
                    f"driver {have} is too old for image {image_version} "
                    f"(CUDA {entry.cuda} needs >= {need}). Upgrade the driver with the nvidia_driver role "
                    f"(nvidia_driver_branch >= {need.split('.')[0]}), or pick an image built on an older "
                    "CUDA from images/compat.yml."
                ),
            )
        )
    elif topology.cuda_version and version_tuple(topology.cuda_version) < version_tuple(entry.cuda):
        out.append(
            Refusal(
                check="driver",
                message=(
                    f"nvidia-smi says this driver supports CUDA {topology.cuda_version}, but image "
                    f"{image_version} is built on CUDA {entry.cuda}. Upgrade the driver, or fix the "
                    f"cuda_min_driver entry for {entry.cuda} in images/compat.yml."
                ),
            )
        )
    return out


def node_from_plan(plan: dict[str, Any], host: str | None) -> tuple[str | None, dict[str, Any]]:
    """The GPU name and the node placement for ``host`` from a ``llmfleet capacity plan --json`` document
    (or a bare node placement)."""
    gpu_name = (plan.get("gpu") or {}).get("name")
    if "instances" in plan:
        return gpu_name, plan
    nodes = plan.get("nodes") or []
    if not nodes:
        raise CompatError(
            "the plan has no nodes: nothing fits, or this is not `llmfleet capacity plan --json`"
        )
    if host is None:
        return gpu_name, nodes[0]
    for node in nodes:
        if node.get("host") == host:
            return gpu_name, node
    raise CompatError(f"the plan has no node {host!r}; its nodes are {[n.get('host') for n in nodes]}")


def check_plan(topology: GpuTopology, gpu_name: str | None, node: dict[str, Any]) -> list[Refusal]:
    """GPU count and model, per-GPU memory and NUMA placement of the plan against this host."""
    out: list[Refusal] = []
    have = set(topology.indexes())
    wanted = sorted({g for inst in node["instances"] for g in inst["gpus"]})
    missing = [g for g in wanted if g not in have]
    if missing:
        out.append(
            Refusal(
                check="gpu_count",
                message=(
                    f"the plan uses GPUs {wanted} but this host has {len(have)} ({sorted(have)}); "
                    f"GPUs {missing} are missing. Re-plan with --gpus-per-node {len(have)}, or check "
                    "`nvidia-smi -L` for a GPU that fell off the bus."
                ),
            )
        )
    if gpu_name:
        wrong = [g for g in topology.gpus if g.index in wanted and g.catalog_name != gpu_name]
        if wrong:
            seen = ", ".join(
                f"GPU {g.index} is {g.name!r} ({g.catalog_name or 'not in catalog/gpus.yml'})" for g in wrong
            )
            out.append(
                Refusal(
                    check="gpu_model",
                    message=(
                        f"the plan is for {gpu_name} but {seen}. Re-plan with --gpu "
                        f"{wrong[0].catalog_name or '<name>'}, or add the card's nvidia-smi name to "
                        "catalog/gpus.yml."
                    ),
                )
            )
    # vLLM refuses to start when free memory is below gpu_memory_utilization x total: check it first.
    # An instance marked running (a redeploy keeps or replaces it in place) already holds its share.
    need: dict[int, float] = {}
    for inst in node["instances"]:
        if inst.get("running"):
            continue
        for g in inst["gpus"]:
            need[g] = need.get(g, 0.0) + float(inst["gpu_memory_utilization"])
    for index, share in sorted(need.items()):
        if index not in have:
            continue
        gpu = topology.gpu(index)
        need_mib = share * gpu.memory_total_mib
        fits = max(0.01, gpu.memory_free_mib / gpu.memory_total_mib - 0.01)
        if need_mib > gpu.memory_free_mib:
            out.append(
                Refusal(
                    check="gpu_memory",
                    message=(
                        f"GPU {index} needs {need_mib:.0f} MiB ({share:.2f} of {gpu.memory_total_mib} MiB) "
                        f"for the plan but has {gpu.memory_free_mib} MiB free ({gpu.memory_used_mib} MiB "
                        "used). Stop what holds it (nvidia-smi --query-compute-apps=pid,used_memory "
                        f"--format=csv), or re-plan with --gpu-memory-utilization {fits:.2f}."
                    ),
                )
            )
    for inst in node["instances"]:
        if any(g not in have for g in inst["gpus"]):
            continue
        try:
            place = placement(topology, inst["gpus"])
        except TopologyError as exc:
            out.append(Refusal(check="numa", message=f"instance {inst['name']}: {exc}"))
            continue
        if place.numa_node is not None and inst.get("numa_node") not in (None, place.numa_node):
            out.append(
                Refusal(
                    check="numa",
                    message=(
                        f"instance {inst['name']}: the plan puts GPUs {inst['gpus']} on NUMA node "
                        f"{inst['numa_node']}, but sysfs says node {place.numa_node}. The container is "
                        "pinned from this host's topology (placement below); re-plan with --numa-nodes "
                        f"{len(topology.numa_nodes)} so the plan agrees."
                    ),
                )
            )
    return out


def placement_notes(topology: GpuTopology, node: dict[str, Any]) -> list[str]:
    """Plans whose CPU numbers do not match this host's NUMA layout: not a refusal, since the containers
    are pinned from the host's topology, but worth knowing (the planner assumes contiguous CPU numbers)."""
    out = []
    for inst in node["instances"]:
        try:
            place = placement(topology, inst["gpus"])
        except TopologyError:
            continue
        if place.numa_node is None or not inst.get("cpus"):
            continue
        real = next(n.cpus for n in topology.numa_nodes if n.node == place.numa_node)
        stray = sorted(set(inst["cpus"]) - set(real))
        if stray:
            out.append(
                f"instance {inst['name']}: planned CPUs {format_cpulist(stray)} are not on NUMA node "
                f"{place.numa_node} (its CPUs are {place.cpuset_cpus}); the container is pinned to the "
                "node's CPUs"
            )
    return out


def placements(topology: GpuTopology, node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each planned instance's cpuset and memory node, from this host's real topology."""
    out = {}
    for inst in node["instances"]:
        try:
            out[inst["name"]] = placement(topology, inst["gpus"]).model_dump()
        except TopologyError:
            continue
    return out


def preflight(
    topology: GpuTopology,
    matrix: CompatMatrix,
    image_version: str,
    plan: dict[str, Any] | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """All GPU checks; ``ok`` is False when any refusal was found."""
    refusals = check_driver(matrix, image_version, topology)
    result: dict[str, Any] = {
        "image_version": image_version,
        "image_cuda": matrix.image(image_version).cuda,
        "driver_version": topology.driver_version,
        "min_driver": matrix.min_driver(matrix.image(image_version).cuda),
        "gpu_count": len(topology.gpus),
        "placements": {},
        "notes": [],
    }
    if plan is not None:
        gpu_name, node = node_from_plan(plan, host)
        refusals += check_plan(topology, gpu_name, node)
        result["placements"] = placements(topology, node)
        result["notes"] = placement_notes(topology, node)
    result["ok"] = not refusals
    result["refusals"] = [r.model_dump() for r in refusals]
    return result
