"""Golden outputs of the capacity planner: the table, the JSON and the inventory fragment.

Same input, same bytes. Refresh after a deliberate change with:
UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_capacity_golden.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
import yaml

from llmfleet.capacity.candidates import plan_capacity
from llmfleet.capacity.modelconfig import load_model
from llmfleet.capacity.options import EmbeddingOptions, PlanOptions
from llmfleet.capacity.render import (
    GENERATED_MARK,
    plan_json,
    plan_table,
    render_inventory,
    write_inventory,
)
from llmfleet.catalog.gpus import load_gpu_catalog
from llmfleet.errors import CapacityError

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "capacity"
CONFIGS = "tests/data/hf-configs"

CASES = {
    "llama8b-l4x4-embeddings": dict(
        config="meta-llama--Llama-3.1-8B-Instruct",
        embedding="sentence-transformers--all-MiniLM-L6-v2",
        options=dict(
            gpu="L4-24GB",
            gpus_per_node=4,
            nodes=2,
            max_model_len=8192,
            numa_nodes=2,
            cpus_per_node=32,
            hosts=["l4-a", "l4-b"],
            embedding=EmbeddingOptions(replicas=2),
        ),
    ),
    "qwq32b-fp8-16gbx8": dict(
        config="Qwen--QwQ-32B",
        options=dict(
            gpu="RTX4070TiS-16GB",
            gpus_per_node=8,
            max_model_len=40960,
            quantization="fp8",
            kv_cache_dtype="fp8",
        ),
    ),
    "deepseek-v3-h200x8": dict(
        config="deepseek-ai--DeepSeek-V3",
        options=dict(gpu="H200-141GB", gpus_per_node=8, max_model_len=32768, block_size=64),
    ),
}


def make_plan(case: str):
    spec = CASES[case]
    arch, source = load_model(f"{CONFIGS}/{spec['config']}")
    emb = load_model(f"{CONFIGS}/{spec['embedding']}") if "embedding" in spec else None
    return plan_capacity(arch, source, PlanOptions(**spec["options"]), load_gpu_catalog(), emb)


def outputs(case: str) -> dict[str, str]:
    plan = make_plan(case)
    files = {
        "plan.txt": plan_table(plan),
        "plan.json": json.dumps(plan_json(plan), indent=2, sort_keys=True) + "\n",
    }
    for rel, text in render_inventory(plan, case, command=f"llmfleet capacity render ... ({case})").items():
        files[rel.replace("/", "__")] = text
    return files


def compare(case: str, files: dict[str, str]) -> None:
    golden = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.mkdir(parents=True, exist_ok=True)
        for old in golden.iterdir():
            old.unlink()
        for name, text in files.items():
            (golden / name).write_bytes(text.encode())
    assert sorted(p.name for p in golden.iterdir()) == sorted(files)
    for name, text in files.items():
        expected = (golden / name).read_bytes().decode()
        if expected != text:
            diff = "".join(
                difflib.unified_diff(expected.splitlines(True), text.splitlines(True), f"golden/{name}", name)
            )
            pytest.fail(f"{case}/{name} differs from its golden file (UPDATE_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_golden_files(case, monkeypatch):
    monkeypatch.chdir(REPO)  # config paths in the output are relative to the repository
    first = outputs(case)
    assert outputs(case) == first  # deterministic within a run as well
    compare(case, first)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inventory_is_valid_yaml_with_the_header(case, monkeypatch):
    monkeypatch.chdir(REPO)
    plan = make_plan(case)
    for rel, text in render_inventory(plan, case).items():
        assert text.startswith("---\n" + GENERATED_MARK + "\n"), rel
        data = yaml.safe_load(text)
        assert isinstance(data, dict), rel
    chosen = plan.candidates[plan.chosen]
    host_files = {
        rel: yaml.safe_load(t) for rel, t in render_inventory(plan, case).items() if "/host_vars/" in rel
    }
    assert len(host_files) == plan.options.nodes
    for data in host_files.values():
        llm = [i for i in data["llmfleet_capacity_instances"] if i["model"] == plan.model.name]
        assert len(llm) == chosen.instances_per_node
        for inst in llm:
            args = inst["vllm_args"]
            assert args[args.index("--tensor-parallel-size") + 1] == str(chosen.tp)
            assert args[args.index("--pipeline-parallel-size") + 1] == str(chosen.pp)
            assert inst["cuda_visible_devices"] == ",".join(map(str, inst["gpus"]))


def test_write_inventory_refuses_to_overwrite_a_hand_written_file(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    files = render_inventory(make_plan("qwq32b-fp8-16gbx8"), "lab")
    written = write_inventory(files, tmp_path)
    assert [p.read_text() for p in written] == list(files.values())
    write_inventory(files, tmp_path)  # re-rendering its own files is fine
    hosts = tmp_path / "inventories" / "lab" / "capacity-hosts.yml"
    hosts.write_text("all: {}\n")
    with pytest.raises(CapacityError, match=r"capacity-hosts.yml exists and was not generated"):
        write_inventory(files, tmp_path)
    assert hosts.read_text() == "all: {}\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_inventory_passes_the_repositorys_yamllint(case, monkeypatch):
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    monkeypatch.chdir(REPO)
    conf = YamlLintConfig(file=str(REPO / ".yamllint"))
    for rel, text in render_inventory(make_plan(case), case, command="llmfleet capacity render").items():
        problems = [f"{p.line}:{p.column} {p.level} {p.desc}" for p in linter.run(text, conf)]
        assert problems == [], rel
