"""Developer tools: generated files and the checks that keep them current.

``python -m llmfleet.devtools argspecs --write`` regenerates every role's ``meta/argument_specs.yml``
from its ``defaults/main.yml``: the defaults file (each variable with the comment above it) is the one
source, so the spec Ansible validates against cannot drift from the values actually used.
``--check`` exits 1 and names the stale files (``make test`` runs it).

``python -m llmfleet.devtools gpu-table --write`` regenerates Terraform's GPU instance-type table
(``terraform/modules/gpu_node_pool/gpu_instance_types.json``) from ``catalog/gpus.yml``, the one source of
GPU facts; ``--check`` fails when the table is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HEADER = (
    "# Generated from defaults/main.yml by `python -m llmfleet.devtools argspecs --write`; do not edit.\n"
)
_YAML_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


class _IndentedDumper(yaml.SafeDumper):
    """Indent block sequences under their key, as yamllint's default rules want."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _comments_by_key(defaults_text: str) -> dict[str, str]:
    """The comment block directly above each top-level key, joined into one description."""
    out: dict[str, str] = {}
    block: list[str] = []
    for line in defaults_text.splitlines():
        if line.startswith("#"):
            block.append(line.lstrip("#").strip())
        elif line and not line[0].isspace() and ":" in line and not line.startswith("---"):
            out[line.split(":", 1)[0]] = " ".join(block).strip()
            block = []
        elif not line.strip():
            block = []
    return out


def _spec_for(value: object, description: str) -> dict[str, object]:
    spec: dict[str, object] = {"type": _YAML_TYPES[type(value)], "description": description}
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        spec["elements"] = _YAML_TYPES[kinds.pop()] if len(kinds) == 1 else "raw"
        if not value:
            # Nothing to infer from: a comment that shows the items as mappings ("[{name, url}]") says dict.
            spec["elements"] = "dict" if "[{" in description else "str"
    spec["default"] = value
    return spec


def render_argument_specs(role: str, defaults_text: str, short_description: str) -> str:
    values = yaml.safe_load(defaults_text) or {}
    comments = _comments_by_key(defaults_text)
    missing = [k for k in values if not comments.get(k)]
    if missing:
        raise ValueError(f"role {role}: defaults without a comment above them: {', '.join(missing)}")
    wrong_prefix = [k for k in values if not k.startswith(f"{role}_")]
    if wrong_prefix:
        raise ValueError(
            f"role {role}: public variables must start with '{role}_': {', '.join(wrong_prefix)}"
        )
    options = {key: _spec_for(value, comments[key]) for key, value in values.items()}
    doc = {"argument_specs": {"main": {"short_description": short_description, "options": options}}}
    body = yaml.dump(doc, Dumper=_IndentedDumper, sort_keys=False, width=110, default_flow_style=False)
    return f"---\n{HEADER}{body}"


def role_argument_specs(role_dir: Path) -> str:
    meta = yaml.safe_load((role_dir / "meta" / "main.yml").read_text())
    description = meta["galaxy_info"]["description"]
    return render_argument_specs(role_dir.name, (role_dir / "defaults" / "main.yml").read_text(), description)


def roles_root() -> Path:
    return Path(__file__).resolve().parents[2] / "ansible" / "roles"


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
    return (
        Path(__file__).resolve().parents[2]
        / "terraform"
        / "modules"
        / "gpu_node_pool"
        / "gpu_instance_types.json"
    )


def render_gpu_table(catalog_path: Path | None = None) -> str:
    """The instance-type table Terraform reads: every AWS GPU type with its GPU's facts folded in."""
    from llmfleet.gpus import DEFAULT_GPU_CATALOG, load_gpu_catalog

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
    stale = argspecs(write=args.write) if args.tool == "argspecs" else gpu_table(write=args.write)
    for path in stale:
        print(f"{'wrote' if args.write else 'stale'}: {path}")
    if args.check and stale:
        print(f"run: .venv/bin/python -m llmfleet.devtools {args.tool} --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
