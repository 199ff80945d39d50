"""Results in SQLite: a run, its steps and every request come back as they went in."""

from __future__ import annotations

import pytest

from llmfleet.bench.errors import BenchError
from llmfleet.bench.metrics import RequestResult, summarize
from llmfleet.bench.store import ResultStore, Run, Step, new_run_id


def make_run(run_id: str, label: str = "") -> Run:
    return Run(
        id=run_id,
        created_at="2026-11-23T12:00:00Z",
        label=label,
        status="running",
        profile_name="smoke",
        profile={"name": "smoke", "experiments": [{"name": "short"}]},
        target="gateway",
        base_url="http://127.0.0.1:8000/v1",
        model="smollm2-135m-instruct",
        fingerprint={"cpu_model": "AMD EPYC", "vllm_version": "0.32.0", "vllm_argv": [["python", "-m", "x"]]},
    )


def test_round_trip(tmp_path):
    db = tmp_path / "r.sqlite"
    results = [
        RequestResult(
            ok=True, start=0.01, ttft=0.2, latency=1.0, itl=[0.4, 0.4], prompt_tokens=32, output_tokens=3
        ),
        RequestResult(ok=False, start=0.02, error="HTTP 500: boom"),
    ]
    metrics = summarize(results, 1.5)
    run = make_run("20261123T120000Z-abcdef", label="before")
    with ResultStore(db) as store:
        store.start_run(run)
        store.add_step(run.id, Step("short", 2, 32, 3, metrics), results)
        store.finish_run(run.id, "complete")
    with ResultStore(db) as store:  # a fresh connection reads what was committed
        loaded = store.load_run(run.id)
        by_label = store.load_run("before")
        requests = store.load_requests(run.id, "short", 2)
        listed = store.list_runs()
    assert loaded.status == "complete"
    assert loaded.fingerprint == run.fingerprint and loaded.profile == run.profile
    assert (loaded.model, loaded.target, loaded.base_url) == (run.model, run.target, run.base_url)
    assert [(s.experiment, s.concurrency, s.input_tokens, s.output_tokens) for s in loaded.steps] == [
        ("short", 2, 32, 3)
    ]
    assert loaded.steps[0].metrics == metrics
    assert by_label.id == run.id
    assert requests == results
    assert listed == [(run.id, run.created_at, "before", "complete", "smoke", "gateway")]


def test_an_unknown_run_names_the_known_ones(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.start_run(make_run("run-a"))
        with pytest.raises(BenchError, match=r"no run 'run-b'.*run-a"):
            store.load_run("run-b")


def test_run_ids_are_unique_and_sortable():
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i.split("-")[0]) == 16 and i[8] == "T" for i in ids)
