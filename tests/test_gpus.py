"""The GPU catalog: the issue's required cards are there, references resolve, errors name the fix."""

from __future__ import annotations

import pytest
import yaml

from llmfleet.catalog.gpus import DEFAULT_GPU_CATALOG, load_gpu_catalog
from llmfleet.errors import CatalogError

REQUIRED = [
    "T4-16GB",
    "A10-24GB",
    "L4-24GB",
    "L40S-48GB",
    "A100-40GB",
    "A100-80GB",
    "H20-96GB",
    "H100-80GB",
    "H200-141GB",
    "RTX4070TiS-16GB",
]


def test_required_gpus_present():
    catalog = load_gpu_catalog()
    missing = [name for name in REQUIRED if name not in catalog.gpus]
    assert missing == []


def test_reported_memory_is_close_to_the_name():
    # The name says the marketing size; the reported memory is within 7% of it (catches a typo'd digit).
    for name, gpu in load_gpu_catalog().gpus.items():
        nominal = int(name.rsplit("-", 1)[1].removesuffix("GB"))
        assert abs(gpu.memory_mib / 1024 - nominal) / nominal < 0.07, name


def test_nvidia_smi_names_resolve():
    catalog = load_gpu_catalog()
    assert catalog.name_for_nvidia_smi("NVIDIA H100 80GB HBM3") == "H100-80GB"
    assert catalog.name_for_nvidia_smi("Tesla T4 ") == "T4-16GB"
    assert catalog.name_for_nvidia_smi("NVIDIA B200") is None


@pytest.mark.parametrize(
    ("smi_name", "catalog_name", "interconnect"),
    [
        ("NVIDIA H100 PCIe", "H100PCIe-80GB", "pcie"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB", "nvlink"),
        ("NVIDIA A100-PCIE-40GB", "A100PCIe-40GB", "pcie"),
        ("NVIDIA A100 80GB PCIe", "A100PCIe-80GB", "pcie"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB", "nvlink"),
    ],
)
def test_pcie_boards_are_not_taken_for_nvlink_ones(smi_name, catalog_name, interconnect):
    # The planner ranks TP x PP by interconnect: a PCIe H100 named as the SXM one would be split as if it
    # had NVLink between its cards.
    catalog = load_gpu_catalog()
    assert catalog.name_for_nvidia_smi(smi_name) == catalog_name
    assert catalog.get(catalog_name).interconnect == interconnect


def test_unknown_gpu_names_the_choices():
    with pytest.raises(CatalogError, match=r"unknown GPU 'H800-80GB'.*H100-80GB.*--gpu-memory-gib"):
        load_gpu_catalog().get("H800-80GB")


def test_instance_type_with_unknown_gpu_is_refused(tmp_path):
    raw = yaml.safe_load(DEFAULT_GPU_CATALOG.read_text())
    raw["aws_instance_types"]["p9.large"] = {
        "gpu": "B300-288GB",
        "gpu_count": 8,
        "vcpus": 8,
        "memory_gib": 8,
        "instance_store_gib": 0,
    }
    path = tmp_path / "gpus.yml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(CatalogError, match=r"p9.large.gpu is 'B300-288GB'"):
        load_gpu_catalog(path)


def test_misspelt_field_is_refused(tmp_path):
    raw = yaml.safe_load(DEFAULT_GPU_CATALOG.read_text())
    raw["gpus"]["T4-16GB"]["memroy_mib"] = raw["gpus"]["T4-16GB"].pop("memory_mib")
    path = tmp_path / "gpus.yml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(CatalogError, match=r"gpus.T4-16GB.memroy_mib"):
        load_gpu_catalog(path)
