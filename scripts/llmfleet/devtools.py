"""Developer tools: generated files and the checks that keep them current.

``python -m llmfleet.devtools argspecs --write`` regenerates every role's ``meta/argument_specs.yml``
from its ``defaults/main.yml``: the defaults file (each variable with the comment above it) is the one
source, so the spec Ansible validates against cannot drift from the values actually used.
``--check`` exits 1 and names the stale files (``make test`` runs it).

The comment block directly above a variable is its description. What its value cannot say is written as
marker lines in that block, one ``key: value`` per line below the prose (so no prose line may start with
one of these four keys and a colon); they go into the spec, not into the description:

- ``# choices: fail, warn, off``: the only values the role accepts (the comma-separated list, each item
  read as the variable's type: ``str``, ``int`` or ``float``). A literal default must be one of them. Ansible
  rejects any other value before the role's first task.
- ``# required: true``: the role cannot work unless the caller sets the variable. The defaults file still
  holds an empty placeholder (``""``, ``{}``, ``[]``; anything else is refused), so the role's tasks and
  its other entry points see the variable defined and its own assert can name what is missing; the spec
  carries no default (Ansible refuses ``required`` together with ``default``). Ansible's ``required`` only
  asks that the variable be set, so an empty value still reaches the role's assert.
- ``# elements: dict``: what a list holds (``str``, ``int``, ``float``, ``bool``, ``list``, ``dict`` or
  ``raw``). Needed for an empty list and for a templated one, where nothing can be inferred; a non-empty
  literal list is inferred from its items and the marker, if given, must agree with them.
- ``# type: list``: the type of a templated default (``"{{ ... }}"`` is a string until Ansible renders
  it); a literal default's own type is used, and a marker that disagrees with it is refused.

``python -m llmfleet.devtools gpu-table --write`` regenerates Terraform's GPU instance-type table
(``terraform/modules/gpu_node_pool/gpu_instance_types.json``) from ``catalog/gpus.yml``, the one source of
GPU facts; ``--check`` fails when the table is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmfleet.paths import REPO_ROOT

HEADER = (
    "# Generated from defaults/main.yml by `python -m llmfleet.devtools argspecs --write`; do not edit.\n"
)
_YAML_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
_SPEC_TYPES = {*_YAML_TYPES.values(), "raw"}
# A comment line that is a marker rather than prose (see the module docstring).
_MARKER = re.compile(r"^(choices|required|elements|type):\s*(.*?)\s*$")
_CHOICE_TYPES = {"str": str, "int": int, "float": float}


class _IndentedDumper(yaml.SafeDumper):
    """Indent block sequences under their key, as yamllint's default rules want."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


@dataclass
class _Documented:
    """A variable's comment block: its prose description and its marker lines."""

    description: str
    markers: dict[str, str] = field(default_factory=dict)


def _comments_by_key(defaults_text: str) -> dict[str, _Documented]:
    """The comment block directly above each top-level key: its prose as one description, its markers."""
    out: dict[str, _Documented] = {}
    prose: list[str] = []
    markers: dict[str, str] = {}
    for line in defaults_text.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            marker = _MARKER.match(text)
            if marker:
                markers[marker.group(1)] = marker.group(2)
            else:
                prose.append(text)
        elif line and not line[0].isspace() and ":" in line and not line.startswith("---"):
            out[line.split(":", 1)[0]] = _Documented(" ".join(prose).strip(), markers)
            prose, markers = [], {}
        elif not line.strip():
            prose, markers = [], {}
    return out


def _is_template(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


def _spec_for(key: str, value: object, doc: _Documented) -> dict[str, object]:
    """One option of the spec; raises ValueError where the markers contradict the value or each other."""

    def refuse(why: str) -> ValueError:
        return ValueError(f"{key}: {why}")

    markers = doc.markers
    literal_type = _YAML_TYPES[type(value)]
    kind = markers.get("type", literal_type)
    if kind not in _SPEC_TYPES:
        raise refuse(f"type {kind!r} is not one of {', '.join(sorted(_SPEC_TYPES))}")
    if kind != literal_type and not _is_template(value):
        raise refuse(f"the default is a {literal_type}, the type marker says {kind}")
    spec: dict[str, object] = {"type": kind, "description": doc.description}

    if kind == "list":
        item_types = {_YAML_TYPES[type(v)] for v in value} if isinstance(value, list) else set()
        inferred = (item_types.pop() if len(item_types) == 1 else "raw") if item_types else None
        elements = markers.get("elements", inferred)
        if elements is None:
            raise refuse(
                "nothing to infer the items' type from: say it with '# elements: str' (or dict, ...)"
            )
        if elements not in _SPEC_TYPES:
            raise refuse(f"elements {elements!r} is not one of {', '.join(sorted(_SPEC_TYPES))}")
        if inferred is not None and elements != inferred:
            raise refuse(f"the default's items are {inferred}, the elements marker says {elements}")
        spec["elements"] = elements
    elif "elements" in markers:
        raise refuse(f"an elements marker on a {kind}, not a list")

    if "choices" in markers:
        if kind not in _CHOICE_TYPES:
            raise refuse(f"choices on a {kind}; only {', '.join(_CHOICE_TYPES)} take them")
        try:
            choices = [_CHOICE_TYPES[kind](c.strip()) for c in markers["choices"].split(",") if c.strip()]
        except ValueError as err:
            raise refuse(f"a choice is not of type {kind}: {err}") from None
        if not choices:
            raise refuse("an empty choices marker")
        spec["choices"] = choices

    required = markers.get("required")
    if required is not None:
        if required != "true":
            raise refuse(f"required marker is {required!r}; write 'required: true' or leave it out")
        if value not in ("", [], {}):
            raise refuse(f"required, but the default {value!r} lets the role work without the caller")
        # Ansible refuses required with a default; the empty placeholder stays in defaults/main.yml only.
        spec["required"] = True
        return spec

    if "choices" in spec and not _is_template(value) and value not in spec["choices"]:
        raise refuse(f"the default {value!r} is not one of the choices {spec['choices']}")
    spec["default"] = value
    return spec


def render_argument_specs(role: str, defaults_text: str, short_description: str) -> str:
    values = yaml.safe_load(defaults_text) or {}
    comments = _comments_by_key(defaults_text)
    missing = [k for k in values if k not in comments or not comments[k].description]
    if missing:
        raise ValueError(f"role {role}: defaults without a comment above them: {', '.join(missing)}")
    wrong_prefix = [k for k in values if not k.startswith(f"{role}_")]
    if wrong_prefix:
        raise ValueError(
            f"role {role}: public variables must start with '{role}_': {', '.join(wrong_prefix)}"
        )
    try:
        options = {key: _spec_for(key, value, comments[key]) for key, value in values.items()}
    except ValueError as err:
        raise ValueError(f"role {role}: {err}") from None
    doc = {"argument_specs": {"main": {"short_description": short_description, "options": options}}}
    body = yaml.dump(doc, Dumper=_IndentedDumper, sort_keys=False, width=110, default_flow_style=False)
    return f"---\n{HEADER}{body}"


def role_argument_specs(role_dir: Path) -> str:
    meta = yaml.safe_load((role_dir / "meta" / "main.yml").read_text())
    description = meta["galaxy_info"]["description"]
    return render_argument_specs(role_dir.name, (role_dir / "defaults" / "main.yml").read_text(), description)


def roles_root() -> Path:
    return REPO_ROOT / "ansible" / "roles"


def argspecs(write: bool, root: Path | None = None) -> list[Path]:
    """Regenerate (write) or compare (check) every role's spec; return the files that were stale."""
    stale = []
    for role_dir in sorted(
        p for p in (root or roles_root()).iterdir() if (p / "defaults" / "main.yml").exists()
    ):
        target = role_dir / "meta" / "argument_specs.yml"
        wanted = role_argument_specs(role_dir)
        if not target.exists() or target.read_text() != wanted:
            stale.append(target)
            if write:
                target.write_text(wanted)
    return stale


GPU_TABLE_NOTE = (
    "Generated from catalog/gpus.yml by `python -m llmfleet.devtools gpu-table --write`; do not edit. "
    "Read by the gpu_node_pool module to validate instance_type and to tag nodes."
)


def gpu_table_path() -> Path:
    return REPO_ROOT / "terraform" / "modules" / "gpu_node_pool" / "gpu_instance_types.json"


def render_gpu_table(catalog_path: Path | None = None) -> str:
    """The instance-type table Terraform reads: every AWS GPU type with its GPU's facts folded in."""
    from llmfleet.catalog.gpus import DEFAULT_GPU_CATALOG, load_gpu_catalog

    catalog = load_gpu_catalog(catalog_path or DEFAULT_GPU_CATALOG)
    table = {}
    for itype, spec in catalog.aws_instance_types.items():
        gpu = catalog.gpus[spec.gpu]
        table[itype] = {
            "gpu": spec.gpu,
            "gpu_count": spec.gpu_count,
            "gpu_memory_mib": gpu.memory_mib,
            "interconnect": gpu.interconnect,
            "vcpus": spec.vcpus,
            "memory_gib": spec.memory_gib,
            "instance_store_gib": spec.instance_store_gib,
        }
    doc = {"_note": GPU_TABLE_NOTE, "instance_types": table}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def gpu_table(write: bool, target: Path | None = None, catalog_path: Path | None = None) -> list[Path]:
    """Regenerate (write) or compare (check) the Terraform GPU table; return it if it was stale."""
    target = target or gpu_table_path()
    wanted = render_gpu_table(catalog_path)
    if target.exists() and target.read_text(encoding="utf-8") == wanted:
        return []
    if write:
        target.write_text(wanted, encoding="utf-8")
    return [target]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.devtools")
    sub = parser.add_subparsers(dest="tool", required=True)
    p = sub.add_parser("argspecs", help="role meta/argument_specs.yml from defaults/main.yml")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    p = sub.add_parser("gpu-table", help="Terraform's GPU instance-type table from catalog/gpus.yml")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    try:
        stale = argspecs(write=args.write) if args.tool == "argspecs" else gpu_table(write=args.write)
    except ValueError as err:  # a defaults file that breaks the conventions: say which, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"{'wrote' if args.write else 'stale'}: {path}")
    if args.check and stale:
        print(f"run: .venv/bin/python -m llmfleet.devtools {args.tool} --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
