"""Every role keeps its contract: commented, prefixed defaults and a generated argument spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmfleet.deploy import registry
from llmfleet.devtools import argspecs, render_argument_specs, roles_root

ROLES = sorted(p for p in roles_root().iterdir() if p.is_dir())


def test_argument_specs_are_generated_from_current_defaults():
    stale = argspecs(write=False)
    assert stale == [], "run: .venv/bin/python -m llmfleet.devtools argspecs --write"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_the_standard_files(role: Path):
    for rel in ("defaults/main.yml", "meta/main.yml", "meta/argument_specs.yml"):
        assert (role / rel).is_file(), f"{role.name} lacks {rel}"
    if role.name != "llmfleet_common":  # defaults only: the shared facts
        assert (role / "tasks" / "main.yml").is_file()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_tasks_use_fully_qualified_module_names(role: Path):
    for path in [*role.glob("tasks/*.yml"), *role.glob("handlers/*.yml")]:
        for task in yaml.safe_load(path.read_text()) or []:
            modules = [
                k
                for k in task
                if k
                not in {
                    "name",
                    "when",
                    "register",
                    "loop",
                    "loop_control",
                    "vars",
                    "changed_when",
                    "listen",
                    "become",
                    "environment",
                    "ignore_errors",
                    "delegate_to",
                    "run_once",
                    "failed_when",
                    "notify",
                    "until",
                    "retries",
                    "delay",
                    "no_log",
                    "tags",
                    "check_mode",
                    "delegate_facts",
                    "ignore_unreachable",
                }
            ]
            assert modules and all(m.startswith("ansible.") for m in modules), f"{path}: {task.get('name')}"


def test_generator_refuses_an_undocumented_or_unprefixed_variable():
    with pytest.raises(ValueError, match="without a comment above them: demo_port"):
        render_argument_specs("demo", "---\ndemo_port: 1\n", "d")
    with pytest.raises(ValueError, match="must start with 'demo_'"):
        render_argument_specs("demo", "---\n# A port.\nport: 1\n", "d")


def test_python_and_ansible_agree_on_where_deployments_are_recorded():
    defaults = yaml.safe_load((roles_root() / "llmfleet_common" / "defaults" / "main.yml").read_text())
    state_dir = defaults["llmfleet_common_state_dir"]
    rendered = defaults["llmfleet_common_registry_dir"].replace("{{ llmfleet_common_state_dir }}", state_dir)
    assert Path(rendered) == registry.DEFAULT_REGISTRY_DIR
