"""Rendering the gateway files and managing API keys, without starting any process.

Golden files pin the exact bytes a deploy writes, so a change to the gateway shows up as a reviewable diff.
Refresh them after a deliberate change with: UPDATE_GOLDEN=1 pytest tests/test_gateway_render.py
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from llmfleet.errors import GatewayError
from llmfleet.gateway import (
    GENERATED_HEADER,
    KEY_PREFIX,
    GatewaySettings,
    ensure_key_file,
    hash_key,
    load_key_hashes,
    new_key,
    render_gateway,
)
from llmfleet.plan import ModelPlan
from plans import make_plan

GOLDEN_DIR = Path(__file__).parent / "golden" / "gateway"
OUTPUT_FILES = ("haproxy.cfg", "keys.map", "models.map")
# Fixed keys, so the goldens are stable; never used outside these tests.
DEFAULT_KEY = "sk-llmfleet-golden-default-0000000000000000"
CI_KEY = "sk-llmfleet-golden-ci-11111111111111111111111"


CASES: dict[str, tuple[list[ModelPlan], dict[str, str]]] = {
    "one-model": ([make_plan("smollm2-135m-instruct", [8100])], {"default": hash_key(DEFAULT_KEY)}),
    "two-models": (
        [make_plan("qwen2.5-0.5b-instruct", [8101, 8102]), make_plan("smollm2-135m-instruct", [8100])],
        {"default": hash_key(DEFAULT_KEY), "ci": hash_key(CI_KEY)},
    ),
}


def shuffled(plans: list[ModelPlan], key_hashes: dict[str, str]) -> tuple[list[ModelPlan], dict[str, str]]:
    """The same deployment given in the opposite order everywhere an order could leak into the output."""
    reordered = [plan.model_copy(update={"instances": plan.instances[::-1]}) for plan in reversed(plans)]
    return reordered, dict(reversed(list(key_hashes.items())))


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden_files(case: str) -> None:
    plans, key_hashes = CASES[case]
    rendered = render_gateway(GatewaySettings(), plans, key_hashes)
    assert sorted(rendered) == sorted(OUTPUT_FILES)
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
    plans, key_hashes = CASES[case]
    first = render_gateway(GatewaySettings(), plans, key_hashes)
    assert render_gateway(GatewaySettings(), plans, key_hashes) == first
    assert render_gateway(GatewaySettings(), *shuffled(plans, key_hashes)) == first


def server_lines(cfg: str) -> list[tuple[str, str, int]]:
    """(backend, server name, port) for every server line."""
    found, backend = [], ""
    for line in cfg.splitlines():
        if line.startswith("backend "):
            backend = line.split()[1]
        elif match := re.match(r"^    server (\S+) \S+:(\d+) check$", line):
            found.append((backend, match.group(1), int(match.group(2))))
    return found


def map_entries(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_invariants(case: str) -> None:
    plans, key_hashes = CASES[case]
    settings = GatewaySettings(config_dir="/srv/gw", runtime_dir="/run/gw")
    files = render_gateway(settings, plans, key_hashes)
    cfg, models_map, keys_map = files["haproxy.cfg"], files["models.map"], files["keys.map"]

    for name, text in files.items():
        assert text.startswith(f"# {GENERATED_HEADER}\n"), name
        assert text.endswith("\n") and not text.endswith("\n\n"), name
    servers = server_lines(cfg)
    ports = [port for _, _, port in servers]
    assert len(ports) == len(set(ports)) == sum(len(plan.instances) for plan in plans)
    assert {(f"model_{i.model}", i.name, i.port) for plan in plans for i in plan.instances} == set(servers)
    assert map_entries(models_map) == {plan.model: f"model_{plan.model}" for plan in plans}
    for plan in plans:
        assert f"\nbackend model_{plan.model}\n" in cfg
        assert f"http-response set-header X-Model-Id {plan.model}\n" in cfg
    assert map_entries(keys_map) == {digest: name for name, digest in key_hashes.items()}
    for secret in (DEFAULT_KEY, CI_KEY):
        assert all(secret not in text for text in files.values())
    # Maps and the admin socket are where the deploy puts them, by absolute path.
    assert "map(/srv/gw/keys.map)" in cfg and "map(/srv/gw/models.map)" in cfg
    assert "stats socket /run/gw/haproxy.sock mode 600 level admin expose-fd listeners\n" in cfg


def test_render_carries_the_measured_settings() -> None:
    """Each of these was measured to matter (shared/references/gateway.md section 5); losing one silently
    breaks streaming, cancellation, long prompts or ejection."""
    cfg = render_gateway(GatewaySettings(), *CASES["one-model"])["haproxy.cfg"]
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
    ):
        assert line in cfg, line
    bufsize = int(re.search(r"^    tune\.bufsize (\d+)$", cfg, re.M).group(1))  # type: ignore[union-attr]
    assert bufsize >= GatewaySettings().max_body_bytes >= 256 * 1024


def test_settings_limits_reach_the_config() -> None:
    settings = GatewaySettings(
        listen_host="10.0.0.5",
        listen_port=9000,
        metrics_port=9404,
        max_body_bytes=1024 * 1024,
        timeout_server_s=120,
        timeout_connect_s=2,
        health_check_path="/ready",
    )
    cfg = render_gateway(settings, *CASES["one-model"])["haproxy.cfg"]
    for line in (
        "    bind 10.0.0.5:9000\n",
        "    bind 10.0.0.5:9404\n",
        "if { req.body_size gt 1048576 }\n",
        "    timeout server 120s\n",
        "    timeout connect 2s\n",
        "    option httpchk GET /ready\n",
    ):
        assert line in cfg, line


@pytest.mark.parametrize("name", ["Model-A", "bad name", "-leading-dash", "under_score", "a/b", 'q"uote', ""])
def test_unsafe_model_name_is_refused_by_name(name: str) -> None:
    with pytest.raises(GatewayError) as error:
        render_gateway(GatewaySettings(), [make_plan(name, [8100])], {})
    assert repr(name) in str(error.value)


def test_instances_sharing_a_port_are_refused() -> None:
    with pytest.raises(GatewayError, match=re.escape("both listen on 127.0.0.1:8100")):
        render_gateway(GatewaySettings(), [make_plan("a", [8100]), make_plan("b", [8100])], {})


def test_model_planned_twice_is_refused() -> None:
    with pytest.raises(GatewayError, match="planned twice"):
        render_gateway(GatewaySettings(), [make_plan("a", [8100]), make_plan("a", [8101])], {})


def test_model_without_instances_is_refused() -> None:
    with pytest.raises(GatewayError, match="no instances"):
        render_gateway(GatewaySettings(), [make_plan("a", [])], {})


@pytest.mark.parametrize("url", ["https://127.0.0.1:8100", "http://127.0.0.1", "http://127.0.0.1:8100/v1"])
def test_instance_url_must_be_plain_http_host_port(url: str) -> None:
    plan = make_plan("a", [8100])
    bad = plan.model_copy(update={"instances": [plan.instances[0].model_copy(update={"url": url})]})
    with pytest.raises(GatewayError, match="http://HOST:PORT"):
        render_gateway(GatewaySettings(), [bad], {})


def test_plaintext_key_in_place_of_a_hash_is_refused_and_not_echoed() -> None:
    with pytest.raises(GatewayError, match="sha256") as error:
        render_gateway(GatewaySettings(), [make_plan("a", [8100])], {"default": DEFAULT_KEY})
    assert DEFAULT_KEY not in str(error.value)
    with pytest.raises(GatewayError, match="sha256"):
        render_gateway(
            GatewaySettings(), [make_plan("a", [8100])], {"default": hash_key(DEFAULT_KEY).upper()}
        )


def test_key_name_must_be_log_and_file_safe() -> None:
    with pytest.raises(GatewayError, match="key name"):
        render_gateway(GatewaySettings(), [make_plan("a", [8100])], {"a b": hash_key(DEFAULT_KEY)})


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_body_bytes": 64 * 1024},
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


def test_load_key_hashes_hashes_each_key_file(tmp_path: Path) -> None:
    _, default_path = ensure_key_file(tmp_path, "default")
    (tmp_path / "ci.key").write_text(f"  {CI_KEY}\n\n")
    (tmp_path / "notes.txt").write_text("not a key")
    hashes = load_key_hashes(tmp_path)
    assert hashes == {"ci": hash_key(CI_KEY), "default": hash_key(default_path.read_text().strip())}
    assert load_key_hashes(tmp_path / "missing") == {}


@pytest.mark.parametrize("content", ["", "\n", "short", "has a space in the middle of it"])
def test_load_key_hashes_refuses_an_unusable_key_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "default.key").write_text(content)
    with pytest.raises(GatewayError, match=re.escape("default.key")):
        load_key_hashes(tmp_path)
