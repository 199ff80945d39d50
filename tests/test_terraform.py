"""Terraform: the generated GPU table, the module contract, and a real plan of terraform/envs/example.

The plan runs offline: providers come from the filesystem mirror named in terraform/terraform.tfrc, and a
CI-only override file gives the AWS provider fake credentials and the skip flags, with a local backend.
Nothing reaches AWS. `make terraform-check` runs fmt, validate, `terraform test` per module and checkov.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmfleet import devtools
from llmfleet.catalog.gpus import load_gpu_catalog

ROOT = Path(__file__).resolve().parents[1]
TF_ROOT = ROOT / "terraform"
CLI_CONFIG = TF_ROOT / "terraform.tfrc"
MODULES = sorted(p for p in (TF_ROOT / "modules").iterdir() if p.is_dir())
EXAMPLE = TF_ROOT / "envs" / "example"
RECORDED = ROOT / "tests" / "data" / "terraform" / "example-output.json"
TERRAFORM = shutil.which("terraform")
_MIRROR = re.search(r'path\s*=\s*"([^"]+)"', CLI_CONFIG.read_text())
MIRROR = Path(_MIRROR.group(1)) if _MIRROR else None

needs_terraform = pytest.mark.skipif(
    TERRAFORM is None or MIRROR is None or not MIRROR.is_dir(),
    reason="needs the terraform CLI and the provider mirror named in terraform/terraform.tfrc",
)

CI_OVERRIDE = """\
# Written by tests/test_terraform.py into a copy of the environment: plan offline with fake credentials.
terraform {
  backend "local" {}
}

provider "aws" {
  access_key                  = "mock"
  secret_key                  = "mock"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  allowed_account_ids         = null
}
"""
AMI_VARS = ["-var", "gpu_ami_id=ami-0123456789abcdef0", "-var", "gateway_ami_id=ami-0fedcba9876543210"]


################################################################################
# The GPU table: generated from catalog/gpus.yml, never edited by hand
################################################################################


def test_gpu_table_is_current() -> None:
    assert devtools.gpu_table(write=False) == [], "run: python -m llmfleet.devtools gpu-table --write"
    table = json.loads(devtools.gpu_table_path().read_text())["instance_types"]
    catalog = load_gpu_catalog()
    assert sorted(table) == sorted(catalog.aws_instance_types)
    for itype, row in table.items():
        spec = catalog.aws_instance_types[itype]
        assert (row["gpu"], row["gpu_count"]) == (spec.gpu, spec.gpu_count)
        assert row["gpu_memory_mib"] == catalog.gpus[spec.gpu].memory_mib


def test_gpu_table_check_fails_when_the_catalog_changes(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "catalog" / "gpus.yml").read_text())
    raw["aws_instance_types"]["g6e.24xlarge"] = {
        "gpu": "L40S-48GB",
        "gpu_count": 4,
        "vcpus": 96,
        "memory_gib": 768,
        "instance_store_gib": 3800,
    }
    catalog = tmp_path / "gpus.yml"
    catalog.write_text(yaml.safe_dump(raw))
    table = tmp_path / "gpu_instance_types.json"
    table.write_text(devtools.gpu_table_path().read_text())
    assert devtools.gpu_table(write=False, target=table, catalog_path=catalog) == [table]
    assert devtools.gpu_table(write=True, target=table, catalog_path=catalog) == [table]
    assert "g6e.24xlarge" in json.loads(table.read_text())["instance_types"]
    assert devtools.gpu_table(write=False, target=table, catalog_path=catalog) == []


def test_gpu_table_cli_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert devtools.main(["gpu-table", "--check"]) == 0


################################################################################
# The module contract (terraform-aws-modules layout, aws-ia style validations and tests)
################################################################################


def _blocks(text: str, kind: str) -> dict[str, str]:
    """Top-level `kind "name" {...}` blocks by name (the text up to the next top-level block)."""
    parts = re.split(rf'(?m)^{kind} "([^"]+)" \{{', text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_module_layout_and_tests(module: Path) -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (module / name).is_file(), f"{module.name}: {name} is missing"
    tests = sorted((module / "tests").glob("*.tftest.hcl"))
    assert {t.name for t in tests} >= {"plan.tftest.hcl", "validation.tftest.hcl"}
    for t in tests:
        text = t.read_text()
        assert 'mock_provider "aws"' in text, f"{t}: unit tests use the mock provider"
        assert "command = apply" not in text, f"{t}: unit tests plan only"


@pytest.mark.parametrize("config", [*MODULES, EXAMPLE], ids=lambda p: p.name)
def test_every_validation_block_has_a_negative_test(config: Path) -> None:
    variables = _blocks((config / "variables.tf").read_text(), "variable")
    expected = {
        name: body.count("validation {") for name, body in variables.items() if "validation {" in body
    }
    runs = _blocks((config / "tests" / "validation.tftest.hcl").read_text(), "run")
    tested: dict[str, int] = {}
    for body in runs.values():
        match = re.search(r"expect_failures\s*=\s*\[([^\]]*)\]", body)
        assert match, f"{config.name}: every run in validation.tftest.hcl expects a failure"
        for ref in re.findall(r"var\.(\w+)", match.group(1)):
            tested[ref] = tested.get(ref, 0) + 1
    missing = {v: n for v, n in expected.items() if tested.get(v, 0) < n}
    assert not missing, f"{config.name}: validation blocks without an expect_failures run: {missing}"


@pytest.mark.parametrize("config", [*MODULES, EXAMPLE], ids=lambda p: p.name)
def test_variables_typed_and_described_outputs_described(config: Path) -> None:
    for name, body in _blocks((config / "variables.tf").read_text(), "variable").items():
        assert re.search(r"^\s+description\s*=", body, re.M), (
            f"{config.name}: variable {name} has no description"
        )
        assert re.search(r"^\s+type\s*=", body, re.M), f"{config.name}: variable {name} has no type"
        assert not re.search(r"^\s+type\s*=\s*any\b", body, re.M), f"{config.name}: variable {name} is `any`"
    for name, body in _blocks((config / "outputs.tf").read_text(), "output").items():
        assert re.search(r"^\s+description\s*=", body, re.M), (
            f"{config.name}: output {name} has no description"
        )


def test_modules_set_lower_bounds_envs_pin_and_lock() -> None:
    for module in MODULES:
        text = (module / "versions.tf").read_text()
        assert 'version = ">= ' in text and "~>" not in text, (
            f"{module.name}: reusable modules set floors only"
        )
        assert not (module / "providers.tf").exists(), f"{module.name}: only root configs configure providers"
    assert '"~> 5.0"' in (EXAMPLE / "versions.tf").read_text()
    lock = (EXAMPLE / ".terraform.lock.hcl").read_text()
    assert 'provider "registry.terraform.io/hashicorp/aws"' in lock and "h1:" in lock


def test_checkov_skips_carry_a_reason() -> None:
    skips = []
    for tf in TF_ROOT.rglob("*.tf"):
        if ".terraform" in tf.parts:
            continue
        for line in tf.read_text().splitlines():
            if "checkov:skip=" in line:
                skips.append((tf, line))
                match = re.search(r"checkov:skip=(CKV2?_AWS_\d+):(.+)$", line)
                assert match and len(match.group(2).strip()) >= 20, (
                    f"{tf}: skip without a reason: {line.strip()}"
                )
    assert skips, "the scan above found the skips"


################################################################################
# A real plan of terraform/envs/example (offline)
################################################################################


def _tf(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(CLI_CONFIG),
        "TF_IN_AUTOMATION": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "CHECKPOINT_DISABLE": "1",
    }
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    proc = subprocess.run(
        [str(TERRAFORM), *args, "-no-color"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        pytest.fail(f"terraform {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of terraform/ with a CI override in envs/example, initialised from the mirror."""
    if TERRAFORM is None or MIRROR is None or not MIRROR.is_dir():
        pytest.skip("needs the terraform CLI and the provider mirror named in terraform/terraform.tfrc")
    root = tmp_path_factory.mktemp("tf")
    ignore = shutil.ignore_patterns(".terraform", "*.tfstate*")
    shutil.copytree(TF_ROOT / "modules", root / "modules", ignore=ignore)
    shutil.copytree(EXAMPLE, root / "envs" / "example", ignore=ignore)
    env_dir = root / "envs" / "example"
    (env_dir / "ci_override.tf").write_text(CI_OVERRIDE)
    _tf(["init", "-input=false"], env_dir)
    return env_dir


def _plan(env_dir: Path, *extra: str) -> dict:
    _tf(["plan", "-input=false", "-var-file=example.tfvars", *AMI_VARS, *extra, "-out=plan.bin"], env_dir)
    return json.loads(_tf(["show", "-json", "plan.bin"], env_dir).stdout)


def _resources(plan: dict, rtype: str) -> dict[str, dict]:
    return {
        rc["address"]: rc["change"]["after"]
        for rc in plan["resource_changes"]
        if rc["type"] == rtype and "create" in rc["change"]["actions"]
    }


@pytest.fixture(scope="module")
def example_plan(example_dir: Path) -> dict:
    return _plan(example_dir)


@needs_terraform
def test_example_plan_creates_the_fleet(example_plan: dict) -> None:
    nodes = _resources(example_plan, "aws_instance")
    assert sorted(nodes) == [
        "module.gateway.aws_instance.gateway[0]",
        'module.gpu_node_pool["h100"].aws_instance.node[0]',
        'module.gpu_node_pool["h100"].aws_instance.node[1]',
        'module.gpu_node_pool["l40s"].aws_instance.node[0]',
    ]
    tags = nodes['module.gpu_node_pool["h100"].aws_instance.node[1]']["tags"]
    assert tags["llmfleet:gpu"] == "H100-80GB" and tags["llmfleet:gpu_count"] == "8"
    assert len(_resources(example_plan, "aws_fsx_lustre_file_system")) == 1
    assert len(_resources(example_plan, "aws_fsx_data_repository_association")) == 1
    assert len(_resources(example_plan, "aws_placement_group")) == 2


@needs_terraform
def test_example_plan_security_posture(example_plan: dict) -> None:
    ingress = _resources(example_plan, "aws_vpc_security_group_ingress_rule")
    world = [
        a for a, r in ingress.items() if r.get("cidr_ipv4") == "0.0.0.0/0" or r.get("cidr_ipv6") == "::/0"
    ]
    assert world == [], "a private gateway means no ingress from the internet at all"
    vllm = ingress["module.network.aws_vpc_security_group_ingress_rule.nodes_vllm_from_gateway"]
    assert vllm["cidr_ipv4"] is None and (vllm["from_port"], vllm["to_port"]) == (8100, 8199)
    ssh = [r for r in ingress.values() if r["from_port"] == 22]
    assert ssh and all(r["cidr_ipv4"] == "192.0.2.0/24" for r in ssh), "SSH only from admin_cidrs"

    for address, lt in _resources(example_plan, "aws_launch_template").items():
        assert lt["metadata_options"][0]["http_tokens"] == "required", address
        ebs = lt["block_device_mappings"][0]["ebs"][0]
        assert ebs["encrypted"] == "true", address
    for address, inst in _resources(example_plan, "aws_instance").items():
        assert inst["metadata_options"][0]["http_tokens"] == "required", address
    gateway = _resources(example_plan, "aws_instance")["module.gateway.aws_instance.gateway[0]"]
    assert gateway["root_block_device"][0]["encrypted"] is True

    (pab,) = _resources(example_plan, "aws_s3_bucket_public_access_block").values()
    assert all(
        pab[k]
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    (versioning,) = _resources(example_plan, "aws_s3_bucket_versioning").values()
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    (sse,) = _resources(example_plan, "aws_s3_bucket_server_side_encryption_configuration").values()
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    (lifecycle,) = _resources(example_plan, "aws_s3_bucket_lifecycle_configuration").values()
    assert {r["id"] for r in lifecycle["rule"]} >= {"abort-incomplete-uploads", "expire-old-versions"}
    (key,) = _resources(example_plan, "aws_kms_key").values()
    assert key["enable_key_rotation"] is True


@needs_terraform
def test_public_gateway_opens_only_https_to_the_world(example_dir: Path) -> None:
    """Also with the longest names validation allows: AWS name prefixes (38 characters) must still fit,
    which the mock provider in `terraform test` does not check."""
    pools = f'node_pools={{ {"p" * 16} = {{ instance_type = "g6.xlarge", nodes = 1 }} }}'
    longest = ["-var", f"name={'e' * 16}", "-var", pools]
    plan = _plan(example_dir, "-var", "gateway_public_https=true", *longest)
    ingress = _resources(plan, "aws_vpc_security_group_ingress_rule")
    world = {a: r for a, r in ingress.items() if r.get("cidr_ipv4") == "0.0.0.0/0"}
    assert list(world) == ['module.network.aws_vpc_security_group_ingress_rule.gateway_https["0.0.0.0/0"]']
    (rule,) = world.values()
    assert (rule["from_port"], rule["to_port"], rule["ip_protocol"]) == (443, 443, "tcp")
    assert len(_resources(plan, "aws_eip")) == 2, "the NAT gateway's and the gateway's Elastic IPs"


@needs_terraform
def test_unknown_instance_type_is_refused_with_the_catalog_list(example_dir: Path) -> None:
    pools = 'node_pools={ big = { instance_type = "p3.16xlarge", nodes = 1 } }'
    proc = _tf(
        ["plan", "-input=false", "-var-file=example.tfvars", *AMI_VARS, "-var", pools],
        example_dir,
        check=False,
    )
    assert proc.returncode != 0
    message = " ".join(proc.stderr.split())
    assert '"p3.16xlarge" is not in the GPU table generated from catalog/gpus.yml' in message
    for itype in load_gpu_catalog().aws_instance_types:
        assert itype in message, f"the error lists the allowed types ({itype} missing)"


def _known_leaves(value: object, unknown: object, path: str = "") -> dict[str, object]:
    """Flatten a planned value to {path: leaf}; leaves that are unknown at plan time map to '(unknown)'."""
    if unknown is True:
        return {path: "(unknown)"}
    if isinstance(value, dict):
        unknown = unknown if isinstance(unknown, dict) else {}
        keys = set(value) | set(unknown)
        return {
            k2: v2
            for k in sorted(keys)
            for k2, v2 in _known_leaves(value.get(k), unknown.get(k), f"{path}.{k}").items()
        }
    if isinstance(value, list):
        unknown = unknown if isinstance(unknown, list) else [None] * len(value)
        return {
            k2: v2
            for i, v in enumerate(value)
            for k2, v2 in _known_leaves(v, unknown[i], f"{path}[{i}]").items()
        }
    return {path: value}


@needs_terraform
def test_recorded_output_matches_plan(example_plan: dict) -> None:
    """The recorded output has the plan's outputs, keys and every value known at plan time."""
    recorded = json.loads(RECORDED.read_text())
    assert sorted(recorded) == sorted(example_plan["output_changes"])
    for name, change in example_plan["output_changes"].items():
        planned = _known_leaves(change.get("after"), change.get("after_unknown"))
        actual = _known_leaves(recorded[name]["value"], None)
        assert sorted(planned) == sorted(actual), f"output {name}: keys differ from the plan"
        for path, value in planned.items():
            if value != "(unknown)":
                assert actual[path] == value, (
                    f"output {name}{path}: recorded {actual[path]!r}, planned {value!r}"
                )
