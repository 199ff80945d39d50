"""The argument spec generator's markers (choices, required, elements, type) and Ansible's use of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from llmfleet.devtools import render_argument_specs, roles_root

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"

DEMO_DEFAULTS = """---
# How the demo reacts: fail, warn or off.
# choices: fail, warn, off
demo_mode: warn
# Catalog name of the model (the role asserts it is set).
# required: true
demo_model: ""
# Instances to start: [{name, port}].
# elements: dict
demo_instances: []
# Gateway hosts, from the inventory.
# type: list
# elements: str
demo_gateways: "{{ groups['gateways'] | default([]) }}"
# Extra arguments, inferred from the items.
demo_args:
  - --verbose
# Ports tried in turn.
# choices: 8000, 8001
demo_port: 8000
"""


def options(defaults_text: str) -> dict[str, dict]:
    spec = yaml.safe_load(render_argument_specs("demo", defaults_text, "Demo."))
    return spec["argument_specs"]["main"]["options"]


def test_markers_become_choices_required_elements_and_type():
    opts = options(DEMO_DEFAULTS)
    assert opts["demo_mode"] == {
        "type": "str",
        "description": "How the demo reacts: fail, warn or off.",  # the marker is not prose
        "choices": ["fail", "warn", "off"],  # 'off' stays a string, not YAML's false
        "default": "warn",
    }
    assert opts["demo_model"]["required"] is True and "default" not in opts["demo_model"]
    assert opts["demo_instances"]["elements"] == "dict"
    assert (opts["demo_gateways"]["type"], opts["demo_gateways"]["elements"]) == ("list", "str")
    assert opts["demo_args"]["elements"] == "str" and "choices" not in opts["demo_args"]
    assert opts["demo_port"]["choices"] == [8000, 8001]


@pytest.mark.parametrize(
    ("defaults_text", "refusal"),
    [
        ("# M.\n# choices: a, b\ndemo_m: c\n", "the default 'c' is not one of the choices"),
        ("# M.\n# required: true\ndemo_m: x\n", "lets the role work without the caller"),
        ("# M.\n# required: yes\ndemo_m: ''\n", "write 'required: true'"),
        ("# M.\ndemo_m: []\n", "say it with '# elements: str'"),
        ("# M.\n# type: list\ndemo_m: '{{ x }}'\n", "say it with '# elements: str'"),
        (
            "# M.\n# elements: dict\ndemo_m: [a]\n",
            "the default's items are str, the elements marker says dict",
        ),
        ("# M.\n# elements: str\ndemo_m: x\n", "an elements marker on a str"),
        ("# M.\n# type: dict\ndemo_m: [a]\n", "the default is a list, the type marker says dict"),
        ("# M.\n# type: mapping\ndemo_m: '{{ x }}'\n", "type 'mapping' is not one of"),
        ("# M.\n# choices: 1, two\ndemo_m: 1\n", "a choice is not of type int"),
        ("# M.\n# choices: a\ndemo_m: [a]\n", "choices on a list"),
    ],
)
def test_contradictory_markers_are_refused(defaults_text: str, refusal: str):
    with pytest.raises(ValueError, match=refusal):
        render_argument_specs("demo", "---\n" + defaults_text, "d")


def real_option(role: str, name: str) -> dict:
    spec = yaml.safe_load((roles_root() / role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"][name]


def test_real_specs_carry_the_roles_contract():
    assert real_option("vllm_service", "vllm_service_golden_check")["choices"] == ["fail", "warn", "off"]
    assert real_option("model_weights", "model_weights_staging_target")["choices"] == ["disk", "shm"]
    assert real_option("preflight", "preflight_model")["required"] is True
    assert real_option("vllm_container", "vllm_container_instances")["elements"] == "dict"
    placements = real_option("vllm_container", "vllm_container_placements")
    assert placements["type"] == "dict"  # a templated default, not the string it is before rendering


# Each refusal is caught by a rescue that keeps the error, which an assert then reads: the play passes only
# if every wrong value was refused with Ansible's own message and every choice was accepted.
CHOICES_PLAY = """---
- name: Argument specs
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Enter the demo role with a mode outside its choices
      block:
        - name: Demo role, mode sometimes
          ansible.builtin.include_role: {name: demo}
          vars: {demo_mode: sometimes}
      rescue:
        - name: Keep the error
          ansible.builtin.set_fact: {_demo_error: "{{ ansible_failed_result.msg }}"}
    - name: The role's spec refused it
      ansible.builtin.assert:
        that: >-
          'value of demo_mode must be one of: fail, warn, off, got: sometimes'
          in _demo_error | default('')
    - name: Enter it with a choice
      ansible.builtin.include_role: {name: demo}
      vars: {demo_mode: "off"}
    - name: Validate vllm_service_golden_check outside its choices
      block:
        - name: Validate sometimes
          ansible.builtin.validate_argument_spec:
            argument_spec: GOLDEN_CHECK_SPEC
            provided_arguments: {vllm_service_golden_check: sometimes}
      rescue:
        - name: Keep the error
          ansible.builtin.set_fact: {_golden_error: "{{ ansible_failed_result.msg }}"}
    - name: The generated spec refused it
      ansible.builtin.assert:
        that: >-
          'value of vllm_service_golden_check must be one of: fail, warn, off, got: sometimes'
          in _golden_error | default('')
    - name: Validate a choice
      ansible.builtin.validate_argument_spec:
        argument_spec: GOLDEN_CHECK_SPEC
        provided_arguments: {vllm_service_golden_check: warn}
"""


@pytest.mark.skipif(not PLAYBOOK.exists(), reason="needs the project venv (make venv)")
def test_ansible_rejects_a_value_outside_the_choices(tmp_path: Path):
    """A role entered the way the playbooks enter roles, and the real vllm_service_golden_check option."""
    role = tmp_path / "roles" / "demo"
    for folder in ("defaults", "meta", "tasks"):
        (role / folder).mkdir(parents=True)
    (role / "defaults" / "main.yml").write_text(DEMO_DEFAULTS)
    (role / "meta" / "argument_specs.yml").write_text(render_argument_specs("demo", DEMO_DEFAULTS, "Demo."))
    (role / "tasks" / "main.yml").write_text(
        "---\n- name: main | Say the mode\n  ansible.builtin.debug:\n    msg: 'demo mode {{ demo_mode }}'\n"
    )
    # JSON is YAML: the option goes into the play exactly as the generator wrote it.
    golden_check = {"vllm_service_golden_check": real_option("vllm_service", "vllm_service_golden_check")}
    (tmp_path / "play.yml").write_text(CHOICES_PLAY.replace("GOLDEN_CHECK_SPEC", json.dumps(golden_check)))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(tmp_path / "roles"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", str(tmp_path / "play.yml")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "demo mode off" in proc.stdout
    assert "demo mode sometimes" not in proc.stdout  # the refused entry ran none of the role's tasks
