"""Rendering the gateway files and managing API keys, without starting any process.

Golden files pin the exact bytes a deploy writes, so a change to the gateway shows up as a reviewable diff.
Refresh them after a deliberate change with: UPDATE_GOLDEN=1 pytest tests/test_gateway_render.py
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from llmfleet.deploy.plan import ModelPlan
from llmfleet.errors import GatewayError
from llmfleet.gateway.haproxy import LUA_FILE, MAP_FILES, render_gateway
from llmfleet.gateway.policy import (
    GENERATED_HEADER,
    KEY_PREFIX,
    ApiKey,
    GatewayPolicy,
    GatewaySettings,
    KeyPolicy,
    PoolPolicy,
    ensure_key_file,
    hash_key,
    load_policy,
    new_key,
    read_key_file,
)
from plans import make_plan

GOLDEN_DIR = Path(__file__).parent / "golden" / "gateway"
OUTPUT_FILES = ("haproxy.cfg", LUA_FILE, *MAP_FILES)
REPO = Path(__file__).resolve().parents[1]
# Fixed keys, so the goldens are stable; never used outside these tests.
DEFAULT_KEY = "sk-llmfleet-golden-default-0000000000000000"
CI_KEY = "sk-llmfleet-golden-ci-11111111111111111111111"


def key(name: str, secret: str, **policy: object) -> ApiKey:
    return ApiKey(name, hash_key(secret), KeyPolicy(**policy))  # type: ignore[arg-type]


CASES: dict[str, tuple[list[ModelPlan], list[ApiKey], GatewayPolicy]] = {
    "one-model": (
        [make_plan("smollm2-135m-instruct", [8100])],
        [key("default", DEFAULT_KEY)],
        GatewayPolicy(),
    ),
    "two-models": (
        [make_plan("qwen2.5-0.5b-instruct", [8101, 8102]), make_plan("smollm2-135m-instruct", [8100])],
        [
            key("default", DEFAULT_KEY),
            key(
                "ci",
                CI_KEY,
                models=["smollm2-135m-instruct"],
                rpm=60,
                tokens_per_minute=10,
                tokens_per_day=50,
            ),
        ],
        GatewayPolicy(
            pools={"qwen2.5-0.5b-instruct": PoolPolicy(weights={"qwen2.5-0.5b-instruct-0": 3})},
        ),
    ),
}


def render(case: str, settings: GatewaySettings | None = None) -> dict[str, str]:
    plans, keys, policy = CASES[case]
    return render_gateway(settings or GatewaySettings(), policy, plans, keys)


def shuffled(plans: list[ModelPlan], keys: list[ApiKey]) -> tuple[list[ModelPlan], list[ApiKey]]:
    """The same deployment given in the opposite order everywhere an order could leak into the output."""
    reordered = [plan.model_copy(update={"instances": plan.instances[::-1]}) for plan in reversed(plans)]
    return reordered, keys[::-1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden_files(case: str) -> None:
    rendered = render(case)
    assert sorted(rendered) == sorted(OUTPUT_FILES)
    # The Lua file is copied verbatim from the package: its source is its golden.
    lua_source = REPO / "scripts" / "llmfleet" / "gateway" / "templates" / "haproxy" / LUA_FILE
    assert rendered.pop(LUA_FILE) == lua_source.read_text()
    golden = GOLDEN_DIR / case
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (golden / name).write_bytes(text.encode())
    for name, text in rendered.items():
        expected = (golden / name).read_bytes().decode()
        if text != expected:
            diff = "".join(
                difflib.unified_diff(
                    expected.splitlines(keepends=True), text.splitlines(keepends=True), f"golden/{name}", name
                )
            )
            pytest.fail(f"{case}/{name} differs from its golden file (UPDATE_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_is_deterministic_whatever_the_input_order(case: str) -> None:
    plans, keys, policy = CASES[case]
    first = render_gateway(GatewaySettings(), policy, plans, keys)
    assert render_gateway(GatewaySettings(), policy, plans, keys) == first
    assert render_gateway(GatewaySettings(), policy, *shuffled(plans, keys)) == first


def server_lines(cfg: str) -> list[tuple[str, str, int]]:
    """(backend, server name, port) for every server line."""
    found, backend = [], ""
    for line in cfg.splitlines():
        if line.startswith("backend "):
            backend = line.split()[1]
        elif match := re.match(r"^    server (\S+) \S+:(\d+) check weight \d+( backup)?$", line):
            found.append((backend, match.group(1), int(match.group(2))))
    return found


def map_entries(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_invariants(case: str) -> None:
    plans, keys, _ = CASES[case]
    files = render(case, GatewaySettings(config_dir="/srv/gw", runtime_dir="/run/gw"))
    cfg, models_map, keys_map = files["haproxy.cfg"], files["models.map"], files["keys.map"]

    for name, text in files.items():
        header = "-- " if name.endswith(".lua") else "# "
        assert text.startswith(f"{header}{GENERATED_HEADER}"), name
        assert text.endswith("\n") and not text.endswith("\n\n"), name
    servers = server_lines(cfg)
    ports = [port for _, _, port in servers]
    assert len(ports) == len(set(ports)) == sum(len(plan.instances) for plan in plans)
    assert {(f"model_{i.model}", i.name, i.port) for plan in plans for i in plan.instances} == set(servers)
    assert map_entries(models_map) == {plan.model: f"model_{plan.model}" for plan in plans}
    for plan in plans:
        assert f"\nbackend model_{plan.model}\n" in cfg
        assert f"http-response set-header X-Model-Id {plan.model}\n" in cfg
    assert map_entries(keys_map) == {k.sha256: k.name for k in keys}
    models = sorted(plan.model for plan in plans)
    for k in keys:
        listed = json.loads(map_entries(files["key-model-list.map"])[k.name])
        allowed = models if "*" in k.policy.models else sorted(k.policy.models)
        assert [m["id"] for m in listed["data"]] == allowed
        assert {f"{k.name}/{m}" for m in k.policy.models} <= set(map_entries(files["key-models.map"]))
    for map_name, field in (("key-rpm.map", "rpm"), ("key-tpm.map", "tokens_per_minute"),
                            ("key-tpd.map", "tokens_per_day")):  # fmt: skip
        expected = {k.name: str(getattr(k.policy, field)) for k in keys if getattr(k.policy, field)}
        assert map_entries(files[map_name]) == expected, map_name
    for secret in (DEFAULT_KEY, CI_KEY):
        assert all(secret not in text for text in files.values())
    # Maps and the admin socket are where the deploy puts them, by absolute path.
    assert "map(/srv/gw/keys.map)" in cfg and "map(/srv/gw/models.map)" in cfg
    assert "stats socket /run/gw/haproxy.sock mode 600 level admin expose-fd listeners\n" in cfg


def test_render_carries_the_measured_settings() -> None:
    """Each of these was measured to matter (shared/references/gateway.md section 5); losing one silently
    breaks streaming, cancellation, long prompts or ejection."""
    cfg = render("one-model")["haproxy.cfg"]
    for line in (
        "    option http-no-delay\n",
        "    option abortonclose\n",
        "    option http-buffer-request\n",
        "    retries 2\n",
        "    option redispatch 1\n",
        "    retry-on conn-failure empty-response response-timeout 502 504\n",
        "    default-server inter 2s fall 3 rise 2 observe layer7 error-limit 5 on-error mark-down\n",
        "    http-request set-var(txn.model) req.body,json_query('$.model')\n",
        "    log stdout format raw local0\n",
        "    balance leastconn\n",
        "    option httpchk GET /health\n",
        "    timeout server 600s\n",
        "    http-request use-service prometheus-exporter if { path /metrics }\n",
        "    filter lua.llmfleet_usage\n",
        "    setenv LLMFLEET_QUOTA_DIR /var/lib/llmfleet/gateway\n",
    ):
        assert line in cfg, line
    bufsize = int(re.search(r"^    tune\.bufsize (\d+)$", cfg, re.M).group(1))  # type: ignore[union-attr]
    assert bufsize >= GatewayPolicy().max_body_bytes >= 256 * 1024


def test_settings_limits_reach_the_config() -> None:
    settings = GatewaySettings(listen_host="10.0.0.5", listen_port=9000, metrics_port=9404)
    policy = GatewayPolicy.model_validate(
        {
            "max_body_bytes": 1024 * 1024,
            "timeout_server_s": 120,
            "timeout_connect_s": 2,
            "retry": {"attempts": 1, "conditions": ["conn-failure", "503"]},
            "health": {"path": "/ready", "interval_s": 5, "fall": 2, "rise": 1, "error_limit": 3},
            "pools": {
                "smollm2-135m-instruct": {
                    "balance": "roundrobin",
                    "weights": {"smollm2-135m-instruct-0": 7},
                    "extra_servers": [{"name": "dc2", "url": "http://10.0.2.15:8100"}],
                }
            },
        }
    )
    plans, keys, _ = CASES["one-model"]
    cfg = render_gateway(settings, policy, plans, keys)["haproxy.cfg"]
    for line in (
        "    bind 10.0.0.5:9000\n",
        "    bind 10.0.0.5:9404\n",
        "if { req.body_size gt 1048576 }\n",
        "    timeout server 120s\n",
        "    timeout connect 2s\n",
        "    option httpchk GET /ready\n",
        "    retries 1\n",
        "    retry-on conn-failure 503\n",
        "    default-server inter 5s fall 2 rise 1 observe layer7 error-limit 3 on-error mark-down\n",
        "    balance roundrobin\n",
        "    server smollm2-135m-instruct-0 127.0.0.1:8100 check weight 7\n",
        "    server dc2 10.0.2.15:8100 check weight 1 backup\n",
    ):
        assert line in cfg, line


def test_the_local_inventory_policy_is_valid_and_says_the_defaults() -> None:
    """The shipped policy file documents the defaults: it must parse, and equal them."""
    policy = load_policy(REPO / "inventories" / "local" / "gateway-policy.yml")
    assert policy.model_dump(exclude={"keys"}) == GatewayPolicy().model_dump(exclude={"keys"})
    assert list(policy.keys) == ["default"] and policy.keys["default"].models == ["*"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_body_bytes: 1024\n", "max_body_bytes"),
        ("retry: {attempts: 2, conditions: [teapot]}\n", "retry.conditions"),
        ("keys: {default: {rmp: 60}}\n", "keys.default.rmp"),
        ("keys: {'bad name': {}}\n", "keys.bad name"),
        ("health: {path: 'no-slash'}\n", "health.path"),
        ("- a list\n", "(top level)"),
    ],
)
def test_policy_file_errors_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gateway-policy.yml"
    path.write_text(text)
    with pytest.raises(GatewayError, match=re.escape(f"gateway policy {path} is invalid")) as error:
        load_policy(path)
    assert message in str(error.value)


def test_missing_policy_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="gateway_policy_file"):
        load_policy(tmp_path / "nope.yml")


def test_pool_naming_an_instance_the_plan_lacks_is_refused() -> None:
    policy = GatewayPolicy(pools={"a": PoolPolicy(weights={"a-7": 2})})
    with pytest.raises(GatewayError, match=r"pools.a names instance\(s\) a-7.*its instances are a-0"):
        render_gateway(GatewaySettings(), policy, [make_plan("a", [8100])], [])


def test_pool_of_backups_only_is_refused() -> None:
    policy = GatewayPolicy(pools={"a": PoolPolicy(backup_instances=["a-0"])})
    with pytest.raises(GatewayError, match="every server is a backup"):
        render_gateway(GatewaySettings(), policy, [make_plan("a", [8100])], [])


@pytest.mark.parametrize(
    "name", ["Model-A", "bad name", "-leading-dash", "under_score", "a/b", 'q"uote', "", "a" * 64]
)
def test_unsafe_model_name_is_refused_by_name(name: str) -> None:
    with pytest.raises(GatewayError) as error:
        render_gateway(GatewaySettings(), GatewayPolicy(), [make_plan(name, [8100])], [])
    assert repr(name) in str(error.value)


def test_instances_sharing_a_port_are_refused() -> None:
    with pytest.raises(GatewayError, match=re.escape("both listen on 127.0.0.1:8100")):
        render_gateway(
            GatewaySettings(), GatewayPolicy(), [make_plan("a", [8100]), make_plan("b", [8100])], []
        )


def test_a_model_on_several_hosts_is_one_pool_of_all_their_instances() -> None:
    """A fleet's gateway: the model's instances on two nodes (fleet-wide names) are one backend's servers."""
    node_a = make_plan("a", [8100], host="10.0.0.1")
    node_b = make_plan("a", [8100], host="10.0.0.2")
    node_b = node_b.model_copy(
        update={
            "host": "node-b",
            "instances": [i.model_copy(update={"name": "a-1"}) for i in node_b.instances],
        }
    )
    cfg = render_gateway(GatewaySettings(), GatewayPolicy(), [node_b, node_a], [])["haproxy.cfg"]
    assert [line.split()[:3] for line in cfg.splitlines() if line.strip().startswith("server a-")] == [
        ["server", "a-0", "10.0.0.1:8100"],
        ["server", "a-1", "10.0.0.2:8100"],
    ]


def test_one_instance_name_on_two_hosts_is_refused_naming_both() -> None:
    node_a = make_plan("a", [8100], host="10.0.0.1")
    node_b = make_plan("a", [8100], host="10.0.0.2").model_copy(update={"host": "node-b"})
    with pytest.raises(GatewayError, match=re.escape("instance 'a-0' is deployed on both node-b and test")):
        render_gateway(GatewaySettings(), GatewayPolicy(), [node_a, node_b], [])


def test_model_without_instances_is_refused() -> None:
    with pytest.raises(GatewayError, match="no instances"):
        render_gateway(GatewaySettings(), GatewayPolicy(), [make_plan("a", [])], [])


@pytest.mark.parametrize("url", ["https://127.0.0.1:8100", "http://127.0.0.1", "http://127.0.0.1:8100/v1"])
def test_instance_url_must_be_plain_http_host_port(url: str) -> None:
    plan = make_plan("a", [8100])
    bad = plan.model_copy(update={"instances": [plan.instances[0].model_copy(update={"url": url})]})
    with pytest.raises(GatewayError, match="http://HOST:PORT"):
        render_gateway(GatewaySettings(), GatewayPolicy(), [bad], [])


def test_plaintext_key_in_place_of_a_hash_is_refused_and_not_echoed() -> None:
    with pytest.raises(GatewayError, match="sha256") as error:
        plaintext = ApiKey("default", DEFAULT_KEY, KeyPolicy())
        render_gateway(GatewaySettings(), GatewayPolicy(), [make_plan("a", [8100])], [plaintext])
    assert DEFAULT_KEY not in str(error.value)
    with pytest.raises(GatewayError, match="sha256"):
        render_gateway(
            GatewaySettings(),
            GatewayPolicy(),
            [make_plan("a", [8100])],
            [ApiKey("default", hash_key(DEFAULT_KEY).upper(), KeyPolicy())],
        )


def test_key_name_must_be_log_and_file_safe() -> None:
    with pytest.raises(GatewayError, match="key name"):
        render_gateway(
            GatewaySettings(), GatewayPolicy(), [make_plan("a", [8100])], [key("a b", DEFAULT_KEY)]
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"listen_port": 8404},
        {"config_dir": "etc/relative"},
        {"runtime_dir": "/run/with space"},
        {"listen_host": "localhost"},
        {"unknown_setting": 1},
    ],
)
def test_settings_refuse_values_haproxy_would_misread(overrides: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        GatewaySettings(**overrides)  # type: ignore[arg-type]


def test_hash_key_is_lower_case_hex_sha256() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key(DEFAULT_KEY) == hashlib.sha256(DEFAULT_KEY.encode()).hexdigest()


def test_new_key_is_header_safe_and_unique() -> None:
    keys = {new_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert re.fullmatch(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}", key), key


@pytest.fixture
def no_umask() -> Iterator[None]:
    """A umask of 0 shows whether the modes are set on purpose rather than left to the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_key_file_creates_a_private_key_once(tmp_path: Path, no_umask: None) -> None:
    keys_dir = tmp_path / "keys"
    created, path = ensure_key_file(keys_dir, "default")
    assert created and path == keys_dir / "default.key"
    assert mode(keys_dir) == 0o700 and mode(path) == 0o600
    content = path.read_text()
    assert content.startswith(KEY_PREFIX) and content.endswith("\n") and content.count("\n") == 1

    created_again, same_path = ensure_key_file(keys_dir, "default")
    assert not created_again and same_path == path
    assert path.read_text() == content
    assert sorted(p.name for p in keys_dir.iterdir()) == ["default.key"]  # no temporary file left behind


def test_ensure_key_file_keeps_a_key_the_operator_wrote(tmp_path: Path) -> None:
    (tmp_path / "ci.key").write_text("sk-operator-chosen-key-123456\n")
    assert ensure_key_file(tmp_path, "ci") == (False, tmp_path / "ci.key")
    assert (tmp_path / "ci.key").read_text() == "sk-operator-chosen-key-123456\n"


def test_ensure_key_file_refuses_a_name_that_escapes_the_directory(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="key name"):
        ensure_key_file(tmp_path, "../outside")


def test_read_key_file_strips_whitespace(tmp_path: Path) -> None:
    (tmp_path / "ci.key").write_text(f"  {CI_KEY}\n\n")
    assert read_key_file(tmp_path / "ci.key") == CI_KEY


@pytest.mark.parametrize("content", ["", "\n", "short", "has a space in the middle of it"])
def test_read_key_file_refuses_an_unusable_key_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "default.key").write_text(content)
    with pytest.raises(GatewayError, match=re.escape("default.key")):
        read_key_file(tmp_path / "default.key")


def test_the_gateway_takes_the_model_name_rule_from_the_catalog() -> None:
    from llmfleet.catalog import models
    from llmfleet.gateway import routes

    assert routes.MODEL_NAME_RE is models.MODEL_NAME_RE
    # The catalog's longest name is served; one character more is refused by both.
    render_gateway(GatewaySettings(), GatewayPolicy(), [make_plan("a" * 63, [8100])], [])
    assert not models.MODEL_NAME_RE.match("a" * 64)
