from __future__ import annotations

import json

from llmfleet.deploy.registry import Deployment, load_all, ports_held, record_path, write_record
from plans import make_plan


def _deployment(model: str, ports: list[int]) -> Deployment:
    return Deployment(
        model=model,
        endpoint="http://127.0.0.1:8000/v1",
        api_key_file="/etc/llmfleet/gateway/keys/default.key",
        weights_path=f"/w/{model}",
        supervisorctl=["supervisorctl"],
        log_dir="/var/log/llmfleet",
        plan=make_plan(model, ports),
    )


def test_write_is_idempotent_and_load_round_trips(tmp_path):
    dep = _deployment("m", [8100])
    assert write_record(tmp_path, dep) is True
    assert write_record(tmp_path, dep) is False
    assert load_all(tmp_path) == [dep]


def test_ports_held_by_others_and_by_the_model_itself(tmp_path):
    write_record(tmp_path, _deployment("a", [8100, 8101]))
    write_record(tmp_path, _deployment("b", [8102]))
    assert ports_held(tmp_path, "a") == ({8102}, [8100, 8101])
    assert ports_held(tmp_path, "c") == ({8100, 8101, 8102}, [])


def test_a_record_from_before_embedding_models_still_loads(tmp_path):
    write_record(tmp_path, _deployment("old", [8100]))
    path = record_path(tmp_path, "old")
    record = json.loads(path.read_text())
    for instance in record["plan"]["instances"]:
        del instance["task"]
    path.write_text(json.dumps(record))
    (loaded,) = load_all(tmp_path)
    assert loaded.plan.instances[0].task == "chat"
