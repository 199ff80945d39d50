"""A GPU host's topology: which GPUs there are, how they are linked, and which NUMA node feeds each.

Inputs are what a GPU host prints and exposes, parsed by pure functions so they can be tested on files:

- ``nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,memory.used,memory.free,driver_version
  --format=csv,noheader,nounits``: the cards, their PCI addresses and memory;
- ``nvidia-smi topo -m``: the link between every pair of GPUs (``NV18``: 18 bonded NVLinks; ``PIX``,
  ``PXB``, ``PHB``, ``NODE``: PCIe inside one socket; ``SYS``: across sockets) and each GPU's CPU affinity;
- plain ``nvidia-smi``'s banner: the highest CUDA version the driver supports;
- sysfs ``/sys/bus/pci/devices/<bdf>/numa_node`` and ``local_cpulist``: the NUMA node and CPUs nearest to
  each GPU (the kernel's own answer; ``topo -m`` is only used when sysfs says nothing).

:func:`placement` turns a GPU set into the ``--cpuset-cpus`` / ``--cpuset-mems`` of the NUMA node that
holds it, and refuses a set that spans NUMA nodes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmfleet.errors import TopologyError
from llmfleet.hosts.cpusets import format_cpulist, parse_cpulist

QUERY_FIELDS = ("index", "name", "pci.bus_id", "memory.total", "memory.used", "memory.free", "driver_version")
NVIDIA_SMI_QUERY = [f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NVLINK = re.compile(r"^NV(\d+)$")
_CUDA = re.compile(r"CUDA Version:\s*(\d+\.\d+)")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gpu(_Frozen):
    index: int = Field(ge=0)
    name: str = Field(description="the name nvidia-smi prints, e.g. 'NVIDIA H100 80GB HBM3'")
    catalog_name: str | None = Field(description="its name in catalog/gpus.yml; None for a card not listed")
    pci_bus_id: str = Field(description="sysfs form, lower case: 0000:18:00.0")
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    driver_version: str
    numa_node: int | None = Field(description="None where the platform reports no NUMA node (-1)")
    local_cpus: list[int]


class NumaNode(_Frozen):
    node: int
    gpus: list[int]
    cpus: list[int]


class GpuTopology(_Frozen):
    driver_version: str
    cuda_version: str | None = Field(description="the highest CUDA the driver supports (nvidia-smi banner)")
    gpus: list[Gpu]
    links: dict[str, dict[str, str]] = Field(description="topo -m between GPUs: links['0']['1'] == 'NV18'")
    nvlink_islands: list[list[int]] = Field(description="GPU sets joined by NVLink; a GPU alone is its own")
    numa_nodes: list[NumaNode]

    def gpu(self, index: int) -> Gpu:
        for g in self.gpus:
            if g.index == index:
                return g
        raise TopologyError(f"GPU {index} does not exist on this host; it has GPUs {self.indexes()}")

    def indexes(self) -> list[int]:
        return [g.index for g in self.gpus]


class Placement(_Frozen):
    gpus: list[int]
    numa_node: int | None
    cpuset_cpus: str = Field(description="for docker --cpuset-cpus; empty: do not pin")
    cpuset_mems: str = Field(description="for docker --cpuset-mems; empty: do not pin")
    nvlink: bool = Field(description="every GPU pair in the set is joined by NVLink")


def sysfs_bdf(nvidia_bus_id: str) -> str:
    """nvidia-smi's ``00000000:18:00.0`` as sysfs names it: ``0000:18:00.0``."""
    m = re.fullmatch(r"([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])", nvidia_bus_id.strip())
    if not m:
        raise TopologyError(f"cannot read PCI bus id {nvidia_bus_id!r} (expected e.g. 00000000:18:00.0)")
    domain, bus, dev, fn = m.groups()
    return f"{int(domain, 16):04x}:{bus.lower()}:{dev.lower()}.{fn}"


def parse_query_csv(text: str) -> list[dict[str, object]]:
    """Rows of the ``--query-gpu`` CSV (:data:`QUERY_FIELDS`, noheader, nounits)."""
    rows = []
    for n, line in enumerate(text.strip().splitlines(), 1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(QUERY_FIELDS):
            raise TopologyError(
                f"nvidia-smi query line {n} has {len(parts)} fields, expected {len(QUERY_FIELDS)} "
                f"({','.join(QUERY_FIELDS)}): {line!r}"
            )
        index, name, bus_id, total, used, free, driver = parts
        try:
            rows.append(
                {
                    "index": int(index),
                    "name": name,
                    "pci_bus_id": sysfs_bdf(bus_id),
                    "memory_total_mib": int(total),
                    "memory_used_mib": int(used),
                    "memory_free_mib": int(free),
                    "driver_version": driver,
                }
            )
        except ValueError:
            raise TopologyError(
                f"nvidia-smi query line {n} has a non-number where one belongs: {line!r}"
            ) from None
    return rows


def parse_cuda_version(banner: str) -> str | None:
    """``CUDA Version: 12.4`` from plain nvidia-smi's banner; None when the banner has none."""
    m = _CUDA.search(banner)
    return m.group(1) if m else None


def parse_topo_matrix(
    text: str,
) -> tuple[dict[str, dict[str, str]], dict[int, list[int]], dict[int, int | None]]:
    """``nvidia-smi topo -m``: GPU-to-GPU links, each GPU's CPU affinity and NUMA affinity.

    Returns ``(links, cpu_affinity, numa_affinity)`` keyed by GPU index. NIC rows and columns are skipped;
    the legend after the matrix is ignored. Cells are tab-separated; the header starts with a tab and may
    carry ANSI underline codes.
    """
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    header_at = next((i for i, line in enumerate(lines) if re.match(r"^\s*GPU0\b", line)), None)
    if header_at is None:
        raise TopologyError("no GPU0 column in nvidia-smi topo -m output; is this the matrix (topo -m)?")
    header = [c.strip() for c in lines[header_at].split("\t")]
    if header and header[0] == "":
        header = header[1:]
    links: dict[str, dict[str, str]] = {}
    cpu_aff: dict[int, list[int]] = {}
    numa_aff: dict[int, int | None] = {}
    for line in lines[header_at + 1 :]:
        if not line.strip() or line.startswith("Legend"):
            break
        cells = [c.strip() for c in line.split("\t")]
        row, values = cells[0], cells[1:]
        if not re.fullmatch(r"GPU\d+", row):
            continue  # a NIC row
        if len(values) < len(header):
            values += [""] * (len(header) - len(values))
        by_col = dict(zip(header, values, strict=False))
        i = int(row[3:])
        links[str(i)] = {
            col[3:]: val for col, val in by_col.items() if re.fullmatch(r"GPU\d+", col) and col != row
        }
        cpu_aff[i] = parse_cpulist(by_col.get("CPU Affinity", ""))
        numa = by_col.get("NUMA Affinity", "").strip()
        numa_aff[i] = int(numa) if numa.isdigit() else None
    if not links:
        raise TopologyError("nvidia-smi topo -m output has a header but no GPU rows")
    return links, cpu_aff, numa_aff


def nvlink_islands(indexes: Sequence[int], links: dict[str, dict[str, str]]) -> list[list[int]]:
    """Connected components of the NVLink graph (``NV#`` links); a GPU without NVLink is alone."""
    parent = {i: i for i in indexes}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, row in links.items():
        for b, kind in row.items():
            if _NVLINK.match(kind) and int(a) in parent and int(b) in parent:
                parent[find(int(a))] = find(int(b))
    groups: dict[int, list[int]] = {}
    for i in indexes:
        groups.setdefault(find(i), []).append(i)
    return sorted(sorted(g) for g in groups.values())


def read_sysfs_numa(sysfs_root: Path, bdf: str) -> tuple[int | None, list[int]] | None:
    """``numa_node`` and ``local_cpulist`` of one PCI device; None when the device is not in sysfs."""
    dev = sysfs_root / "bus" / "pci" / "devices" / bdf
    if not dev.is_dir():
        return None
    node_text = (dev / "numa_node").read_text().strip() if (dev / "numa_node").exists() else "-1"
    cpus_text = (dev / "local_cpulist").read_text() if (dev / "local_cpulist").exists() else ""
    node = int(node_text)
    return (node if node >= 0 else None), parse_cpulist(cpus_text)


def build_topology(
    query_csv: str,
    topo_m: str,
    banner: str,
    sysfs_root: Path | None,
    name_for_nvidia_smi: Callable[[str], str | None] = lambda _: None,
) -> GpuTopology:
    """Combine the three nvidia-smi outputs and sysfs into one :class:`GpuTopology`."""
    rows = parse_query_csv(query_csv)
    if not rows:
        raise TopologyError("nvidia-smi lists no GPU; check the driver (nvidia-smi) before deploying")
    links, cpu_aff, numa_aff = parse_topo_matrix(topo_m)
    drivers = {str(r["driver_version"]) for r in rows}
    if len(drivers) != 1:
        raise TopologyError(
            f"GPUs report different driver versions {sorted(drivers)}; reboot after the upgrade"
        )
    gpus = []
    for r in rows:
        index = int(r["index"])  # type: ignore[call-overload]
        if str(index) not in links:
            raise TopologyError(f"GPU {index} is in the query output but not in nvidia-smi topo -m")
        sys_facts = read_sysfs_numa(sysfs_root, str(r["pci_bus_id"])) if sysfs_root else None
        numa, cpus = sys_facts if sys_facts else (numa_aff.get(index), cpu_aff.get(index, []))
        gpus.append(
            Gpu(
                **r,  # type: ignore[arg-type]
                catalog_name=name_for_nvidia_smi(str(r["name"])),
                numa_node=numa,
                local_cpus=cpus or cpu_aff.get(index, []),
            )
        )
    nodes: dict[int, NumaNode] = {}
    for g in gpus:
        if g.numa_node is None:
            continue
        have = nodes.get(g.numa_node)
        nodes[g.numa_node] = NumaNode(
            node=g.numa_node,
            gpus=[*(have.gpus if have else []), g.index],
            cpus=sorted(set(have.cpus if have else []) | set(g.local_cpus)),
        )
    return GpuTopology(
        driver_version=drivers.pop(),
        cuda_version=parse_cuda_version(banner),
        gpus=gpus,
        links=links,
        nvlink_islands=nvlink_islands([g.index for g in gpus], links),
        numa_nodes=[nodes[k] for k in sorted(nodes)],
    )


def placement(topology: GpuTopology, gpus: Sequence[int]) -> Placement:
    """The cpuset and memory node for a container holding ``gpus``: those of the NUMA node they sit on.

    Refuses a set whose GPUs sit on different NUMA nodes (cross-socket traffic on every step) and names
    a set that would fit. Where the platform reports no NUMA node (-1, e.g. small VMs), nothing is pinned.
    """
    if not gpus:
        raise TopologyError("an instance with no GPU cannot be placed on a GPU host")
    members = [topology.gpu(i) for i in gpus]
    nodes = {g.numa_node for g in members}
    nvlink = all(_NVLINK.match(topology.links[str(a)].get(str(b), "")) for a in gpus for b in gpus if a != b)
    if nodes == {None}:
        return Placement(gpus=list(gpus), numa_node=None, cpuset_cpus="", cpuset_mems="", nvlink=nvlink)
    if len(nodes) != 1 or None in nodes:
        by_node = {n.node: n.gpus for n in topology.numa_nodes}
        spread = ", ".join(f"GPU {g.index} on node {g.numa_node}" for g in members)
        raise TopologyError(
            f"GPUs {list(gpus)} span NUMA nodes ({spread}). Pick GPUs from one node "
            f"({'; '.join(f'node {k}: GPUs {v}' for k, v in sorted(by_node.items()))}), e.g. re-plan with "
            f"`llmfleet capacity plan --numa-nodes {len(by_node)}`"
        )
    node = nodes.pop()
    assert node is not None
    numa = next(n for n in topology.numa_nodes if n.node == node)
    return Placement(
        gpus=list(gpus),
        numa_node=node,
        cpuset_cpus=format_cpulist(numa.cpus),
        cpuset_mems=str(node),
        nvlink=nvlink,
    )


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise TopologyError(
            f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}. "
            "Is the NVIDIA driver loaded (lsmod | grep nvidia)? Install it with the nvidia_driver role."
        )
    return proc.stdout


def gather(sysfs_root: Path = Path("/sys"), fixture_dir: Path | None = None) -> GpuTopology:
    """This host's topology; or, with ``fixture_dir``, the one recorded there (the files the README of
    tests/fixtures/nvidia names)."""
    from llmfleet.catalog.gpus import load_gpu_catalog

    catalog = load_gpu_catalog()
    if fixture_dir is not None:
        return build_topology(
            (fixture_dir / "query-gpu.csv").read_text(),
            (fixture_dir / "topo-m.txt").read_text(),
            (fixture_dir / "nvidia-smi.txt").read_text(),
            fixture_dir / "sys",
            catalog.name_for_nvidia_smi,
        )
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise TopologyError(
            "nvidia-smi is not installed: this host has no NVIDIA driver. Run the nvidia_driver role, "
            "or use llmfleet_common_profile: cpu for this host"
        )
    return build_topology(
        _run([smi, *NVIDIA_SMI_QUERY]),
        _run([smi, "topo", "-m"]),
        _run([smi]),
        sysfs_root,
        catalog.name_for_nvidia_smi,
    )
