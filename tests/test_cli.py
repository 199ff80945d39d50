"""The CLI maps errors to clear messages and exit codes, never tracebacks."""

from __future__ import annotations

import json

from llmfleet.cli import main


def test_catalog_list_json(capsys):
    assert main(["catalog", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["default_model"] == "smollm2-135m-instruct"


def test_unknown_model_exit_code_and_message(capsys):
    code = main(["catalog", "show", "nope"])
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith("llmfleet: error: unknown model 'nope'")
    assert "Traceback" not in err


def test_plan_prints_json_from_given_facts(capsys, tmp_path):
    facts = {"hostname": "h", "cpus": [0, 1, 2, 3], "memory_bytes": 16 * 1024**3, "gpu_count": 0}
    code = main(
        [
            "plan",
            "--model",
            "smollm2-135m-instruct",
            "--settings-json",
            '{"profile": "cpu", "instances": 2}',
            "--host-facts-json",
            json.dumps(facts),
            "--registry",
            str(tmp_path),
        ]
    )
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert [i["cpus"] for i in plan["instances"]] == [[0, 1], [2, 3]]


def test_bad_settings_are_a_usage_error(capsys, tmp_path):
    code = main(
        [
            "plan",
            "--model",
            "smollm2-135m-instruct",
            "--settings-json",
            '{"profile": "cpu", "instancs": 2}',
            "--host-facts-json",
            '{"hostname": "h", "cpus": [0], "memory_bytes": 1, "gpu_count": 0}',
            "--registry",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "instancs" in capsys.readouterr().err


def test_status_with_nothing_deployed(capsys, tmp_path):
    assert main(["status", "--json", "--registry", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"models": []}


def test_verify_of_a_model_not_deployed_names_what_is(capsys, tmp_path):
    assert main(["weights", "verify", "smollm2-135m-instruct", "--registry", str(tmp_path)]) == 6
    assert "is not deployed on this host (deployed: none)" in capsys.readouterr().err
