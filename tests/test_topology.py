"""GPU topology from nvidia-smi and sysfs, on hand-written fixtures (tests/fixtures/nvidia/README.md says
they were NOT captured from a real machine; a session with a GPU should replace them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.catalog.gpus import load_gpu_catalog
from llmfleet.hosts.cpusets import format_cpulist, parse_cpulist
from llmfleet.hosts.topology import (
    TopologyError,
    build_topology,
    gather,
    parse_cuda_version,
    parse_query_csv,
    parse_topo_matrix,
    placement,
    sysfs_bdf,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia"
DGX = FIXTURES / "dgx-h100-8gpu"
PCIE = FIXTURES / "pcie-l40s-2socket"


def test_cpulist_round_trip():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert parse_cpulist("N/A") == []
    with pytest.raises(TopologyError, match="0-55,112-167"):
        parse_cpulist("zero-three")


def test_bus_id_in_sysfs_form():
    assert sysfs_bdf("00000000:AB:00.0") == "0000:ab:00.0"
    with pytest.raises(TopologyError, match=r"00000000:18:00\.0"):
        sysfs_bdf("GPU-1234")


def test_query_csv_fields_and_a_wrong_query_is_named():
    rows = parse_query_csv((DGX / "query-gpu.csv").read_text())
    assert len(rows) == 8
    assert rows[5] == {
        "index": 5,
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "0000:ab:00.0",
        "memory_total_mib": 81559,
        "memory_used_mib": 40123,
        "memory_free_mib": 41002,
        "driver_version": "550.54.15",
    }
    with pytest.raises(TopologyError, match=r"4 fields, expected 7 \(index,name,pci.bus_id"):
        parse_query_csv("0, Tesla T4, 15360, 535.104.05\n")


def test_cuda_version_from_banner():
    assert parse_cuda_version((DGX / "nvidia-smi.txt").read_text()) == "12.4"
    assert parse_cuda_version("no banner") is None


def test_topo_matrix_nvswitch_box_skips_nics_and_ansi():
    links, cpus, numa = parse_topo_matrix((DGX / "topo-m.txt").read_text())
    assert sorted(links, key=int) == [str(i) for i in range(8)]
    assert links["0"]["7"] == "NV18" and "0" not in links["0"]
    assert all("NIC" not in k for row in links.values() for k in row)
    assert numa == {i: i // 4 for i in range(8)}
    assert format_cpulist(cpus[6]) == "56-111,168-223"


def test_topo_matrix_pcie_links():
    links, _, numa = parse_topo_matrix((PCIE / "topo-m.txt").read_text())
    assert links["0"]["1"] == "PXB" and links["2"]["3"] == "PIX" and links["1"]["2"] == "SYS"
    assert numa == {0: 0, 1: 0, 2: 1, 3: 1}


def test_topo_matrix_refuses_other_output():
    with pytest.raises(TopologyError, match="no GPU0 column"):
        parse_topo_matrix("GPU 0: NVIDIA H100 (UUID: GPU-...)\n")


def test_dgx_topology():
    topo = gather(fixture_dir=DGX)
    assert topo.driver_version == "550.54.15" and topo.cuda_version == "12.4"
    assert {g.catalog_name for g in topo.gpus} == {"H100-80GB"}
    assert topo.nvlink_islands == [list(range(8))]
    assert [(n.node, n.gpus) for n in topo.numa_nodes] == [(0, [0, 1, 2, 3]), (1, [4, 5, 6, 7])]
    assert format_cpulist(topo.numa_nodes[0].cpus) == "0-55,112-167"
    assert topo.gpu(5).pci_bus_id == "0000:ab:00.0"


def test_pcie_topology_has_no_nvlink_islands_beyond_single_gpus():
    topo = gather(fixture_dir=PCIE)
    assert topo.nvlink_islands == [[0], [1], [2], [3]]
    assert {g.catalog_name for g in topo.gpus} == {"L40S-48GB"}
    assert [format_cpulist(n.cpus) for n in topo.numa_nodes] == ["0-23,48-71", "24-47,72-95"]


def test_sysfs_wins_over_topo_m(tmp_path: Path):
    """sysfs is the kernel's answer; topo -m's NUMA column is only the fallback."""
    dev = tmp_path / "bus" / "pci" / "devices" / "0000:17:00.0"
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text("1\n")
    (dev / "local_cpulist").write_text("24-47\n")
    topo = build_topology(
        (PCIE / "query-gpu.csv").read_text(),
        (PCIE / "topo-m.txt").read_text(),
        "",
        tmp_path,
        load_gpu_catalog().name_for_nvidia_smi,
    )
    assert topo.gpu(0).numa_node == 1 and topo.gpu(0).local_cpus == list(range(24, 48))
    # GPU 1 has no sysfs entry here: topo -m's affinity is used.
    assert topo.gpu(1).numa_node == 0 and format_cpulist(topo.gpu(1).local_cpus) == "0-23,48-71"
    assert topo.cuda_version is None


def test_numa_minus_one_means_no_pinning(tmp_path: Path):
    for bdf in ("0000:17:00.0", "0000:31:00.0"):
        dev = tmp_path / "bus" / "pci" / "devices" / bdf
        dev.mkdir(parents=True)
        (dev / "numa_node").write_text("-1\n")
        (dev / "local_cpulist").write_text("0-95\n")
    topo = build_topology(
        (PCIE / "query-gpu.csv").read_text(), (PCIE / "topo-m.txt").read_text(), "", tmp_path
    )
    place = placement(topo, [0, 1])
    assert (place.numa_node, place.cpuset_cpus, place.cpuset_mems) == (None, "", "")


def test_placement_inside_one_node_gets_that_nodes_cpus_and_memory():
    topo = gather(fixture_dir=DGX)
    place = placement(topo, [4, 5, 6, 7])
    assert (place.numa_node, place.cpuset_cpus, place.cpuset_mems, place.nvlink) == (
        1,
        "56-111,168-223",
        "1",
        True,
    )
    pcie = placement(gather(fixture_dir=PCIE), [2, 3])
    assert (pcie.cpuset_cpus, pcie.cpuset_mems, pcie.nvlink) == ("24-47,72-95", "1", False)


def test_placement_across_sockets_is_refused_with_the_fix():
    with pytest.raises(TopologyError) as err:
        placement(gather(fixture_dir=PCIE), [1, 2])
    msg = str(err.value)
    assert "GPU 1 on node 0, GPU 2 on node 1" in msg
    assert "node 0: GPUs [0, 1]; node 1: GPUs [2, 3]" in msg and "--numa-nodes 2" in msg


def test_unknown_gpu_index_names_the_real_ones():
    with pytest.raises(TopologyError, match=r"GPU 9 does not exist on this host; it has GPUs \[0, 1, 2, 3\]"):
        placement(gather(fixture_dir=PCIE), [9])


def test_no_nvidia_smi_says_what_to_do(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("shutil.which", lambda _: None)
    with pytest.raises(TopologyError, match="nvidia_driver role"):
        gather()
