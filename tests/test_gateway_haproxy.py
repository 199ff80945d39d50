"""The rendered gateway config, run by the real HAProxy 2.6 in front of fake OpenAI backends.

Each policy the config claims (keys, routing on the body's model, limits, streaming, headers) is checked
against a running haproxy, because a config that merely parses can still route nowhere. The backends are
tests/backends/fake_openai_backend.py, a stdlib stub: fast enough to keep this file at a few seconds, and
never a stand-in for vLLM (the end-to-end tests use the real one).
"""

from __future__ import annotations

import http.client
import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from hosttools import host_tool, needs_host_tool
from llmfleet.deploy.plan import ModelPlan
from llmfleet.gateway.haproxy import render_gateway
from llmfleet.gateway.keys import (
    GatewayState,
    add_key,
    load_api_keys,
    revoke_key,
    sync_declared_keys,
    write_and_push_maps,
)
from llmfleet.gateway.keys import admin_command as keys_admin_command
from llmfleet.gateway.policy import (
    DeclaredKey,
    GatewayPolicy,
    GatewaySettings,
    KeyPolicy,
    hash_key,
)
from llmfleet.gateway.rotation import drain, readmit, server_state, stat_rows
from plans import make_plan

HAPROXY_FOUND = host_tool("haproxy", "/usr/sbin/haproxy")
HAPROXY = HAPROXY_FOUND or Path("/usr/sbin/haproxy")
FAKE_BACKEND = Path(__file__).parent / "backends" / "fake_openai_backend.py"
KEY = "sk-llmfleet-test-key-0123456789abcdefghij"
OTHER_KEY = "sk-llmfleet-other-key-0123456789abcdefghij"
# Keys with a policy: only model-a; 3 requests a minute; 100 tokens a minute.
NARROW_KEY = "sk-llmfleet-narrow-key-0123456789abcdefgh"
RPM_KEY = "sk-llmfleet-rpm-key-0123456789abcdefghijk"
TPM_KEY = "sk-llmfleet-tpm-key-0123456789abcdefghijk"
KEY_POLICIES = {
    "default": (KEY, DeclaredKey()),
    "other": (OTHER_KEY, DeclaredKey()),
    "narrow": (NARROW_KEY, DeclaredKey(models=["model-a"])),
    "rpm3": (RPM_KEY, DeclaredKey(rpm=3)),
    "tpm100": (TPM_KEY, DeclaredKey(tokens_per_minute=100)),
}
MAX_BODY_BYTES = 256 * 1024
STREAM_CHUNKS = 5
STREAM_CHUNK_MS = 50
START_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# Skipped without HAProxy; failed instead under LLMFLEET_REQUIRE_HOST_TOOLS=1 (tests/hosttools.py).
pytestmark = needs_host_tool("haproxy", HAPROXY_FOUND)


def free_port() -> int:
    """A port the OS says is free now; the tiny race with other processes is acceptable in tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a bounded wait; HAProxy's master takes its workers down with it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_fake_backend(model: str, backend_id: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(FAKE_BACKEND),
                "--model",
                model,
                "--backend-id",
                backend_id,
                "--port",
                "0",
                "--chunks",
                str(STREAM_CHUNKS),
                "--chunk-ms",
                str(STREAM_CHUNK_MS),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    if not ready:
        stop(proc)
        pytest.fail(f"fake backend {backend_id} did not report its port within {START_TIMEOUT_S}s; see {log}")
    line = proc.stdout.readline()
    try:
        return proc, int(json.loads(line)["port"])
    except (ValueError, KeyError):
        stop(proc)
        pytest.fail(f"fake backend {backend_id} printed {line!r} instead of its port; see {log}")


@dataclass(frozen=True)
class Gateway:
    host: str
    port: int
    metrics_port: int
    config_path: Path
    runtime_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    backend_ports: dict[str, int]
    state: GatewayState
    plans: list[ModelPlan]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request on a fresh connection, bounded by REQUEST_TIMEOUT_S."""
    # Raw UTF-8 rather than \u escapes, as the official client (httpx) writes JSON.
    payload = json.dumps(body, ensure_ascii=False).encode() if isinstance(body, dict) else body
    all_headers = {"Content-Type": "application/json"} if payload is not None else {}
    all_headers.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request(method, path, body=payload, headers=all_headers)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def chat(model: str, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    config_dir, runtime_dir, keys_dir, quota_dir = root / "etc", root / "run", root / "keys", root / "quota"
    for directory in (config_dir, runtime_dir, keys_dir, quota_dir):
        directory.mkdir()
    backend_log = root / "backends.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports: dict[str, int] = {}
        for model, backend_id in (
            ("model-a", "model-a-0"),
            ("model-b", "model-b-0"),
            ("model-b", "model-b-1"),
            ("model-c", "model-c-0"),
        ):
            proc, ports[backend_id] = start_fake_backend(model, backend_id, backend_log)
            procs.append(proc)
        plans = [
            make_plan("model-b", [ports["model-b-0"], ports["model-b-1"]]),
            make_plan("model-a", [ports["model-a-0"]]),
            # One live instance and one that refuses connections: retries must hide the dead one.
            make_plan("model-c", [ports["model-c-0"], free_port()]),
            # Nothing listens here: every request to it fails to connect.
            make_plan("model-dead", [free_port()]),
        ]
        settings = GatewaySettings(
            listen_port=free_port(),
            metrics_port=free_port(),
            config_dir=str(config_dir),
            runtime_dir=str(runtime_dir),
            quota_dir=str(quota_dir),
        )
        policy = GatewayPolicy(
            max_body_bytes=MAX_BODY_BYTES, keys={name: pol for name, (_, pol) in KEY_POLICIES.items()}
        )
        # Key files written first stand for keys clients already hold: the sync keeps them.
        for name, (secret, _) in KEY_POLICIES.items():
            (keys_dir / f"{name}.key").write_text(secret + "\n")
        sync_declared_keys(keys_dir, dict(policy.keys))
        files = render_gateway(settings, policy, plans, load_api_keys(keys_dir))
        for name, text in files.items():
            (config_dir / name).write_text(text)
        config_path = config_dir / "haproxy.cfg"
        log_path = root / "haproxy.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(HAPROXY), "-W", "-db", "-f", str(config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        gw = Gateway(
            host=settings.listen_host,
            port=settings.listen_port,
            metrics_port=settings.metrics_port,
            config_path=config_path,
            runtime_dir=runtime_dir,
            log_path=log_path,
            proc=proc,
            backend_ports=ports,
            state=GatewayState(
                settings=settings, policy=policy, keys_dir=str(keys_dir), registry_dir="/unused"
            ),
            plans=plans,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"haproxy exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if call(gw.metrics_port, "GET", "/metrics").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"haproxy did not answer within {START_TIMEOUT_S}s:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield gw
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(autouse=True)
def haproxy_still_running(gateway: Gateway) -> Iterator[None]:
    """A gateway that died mid-module fails every later test with "connection refused"; say why, once."""
    if gateway.proc.poll() is not None:
        pytest.fail(f"haproxy had already exited with {gateway.proc.returncode}; see the first failure")
    yield
    if gateway.proc.poll() is not None:
        log_tail = "\n".join(gateway.log_path.read_text(errors="replace").splitlines()[-60:])
        code = gateway.proc.returncode
        pytest.fail(f"haproxy exited with {code} during this test; its log ends:\n{log_tail}")


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=KEY, max_retries=0, timeout=REQUEST_TIMEOUT_S
    )


def assert_openai_error(resp: Response, status: int, code: str) -> dict:
    assert resp.status == status, resp.body
    assert resp.headers["content-type"] == "application/json"
    error = resp.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_haproxy_accepts_the_rendered_config_without_warnings(gateway: Gateway) -> None:
    result = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(gateway.config_path)], capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output and "[ALERT]" not in output, output


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-llmfleet-wrong-key-0123456789abcdef"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {KEY}"},
        {"api-key": "sk-llmfleet-wrong-key-0123456789abcdef"},
        {"api-key": ""},
        # The hash of the key, as stored in keys.map, is not itself a key.
        {"Authorization": f"Bearer {hash_key(KEY)}"},
    ],
    ids=["none", "wrong-bearer", "empty-bearer", "basic-scheme", "wrong-api-key", "empty-api-key", "hash"],
)
def test_request_without_a_valid_key_gets_401(gateway: Gateway, headers: dict[str, str]) -> None:
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers)
    error = assert_openai_error(resp, 401, "invalid_api_key")
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert UUID_RE.match(resp.headers["x-request-id"])


@pytest.mark.parametrize(
    "headers",
    [BEARER, {"Authorization": f"bearer {KEY}"}, {"api-key": KEY}, {"Authorization": f"Bearer {OTHER_KEY}"}],
    ids=["bearer", "bearer-lower-case", "api-key", "second-key"],
)
def test_valid_key_is_accepted_and_not_forwarded(gateway: Gateway, headers: dict[str, str]) -> None:
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers)
    assert resp.status == 200, resp.body
    assert resp.json()["choices"][0]["message"]["content"] == "hello from model-a-0"
    assert resp.headers["x-backend-saw-key"] == "no"


def test_requests_route_by_model_and_name_model_and_instance(gateway: Gateway) -> None:
    seen: dict[str, set[str]] = {"model-a": set(), "model-b": set()}
    request_ids = set()
    for _ in range(6):
        for model in seen:
            resp = call(gateway.port, "POST", "/v1/chat/completions", chat(model), BEARER)
            assert resp.status == 200, resp.body
            assert resp.headers["x-model-id"] == model
            # The fake backend's id is its instance name, so this checks X-Instance-Id names the server.
            assert resp.headers["x-instance-id"] == resp.headers["x-backend-id"]
            assert UUID_RE.match(resp.headers["x-request-id"])
            assert resp.headers["x-backend-saw-request-id"] == resp.headers["x-request-id"]
            request_ids.add(resp.headers["x-request-id"])
            seen[model].add(resp.headers["x-backend-id"])
    assert seen == {"model-a": {"model-a-0"}, "model-b": {"model-b-0", "model-b-1"}}
    assert len(request_ids) == 12


def test_completions_and_embeddings_paths_route_too(gateway: Gateway) -> None:
    for path in ("/v1/completions", "/v1/embeddings"):
        resp = call(gateway.port, "POST", path, {"model": "model-b", "input": "x"}, BEARER)
        assert resp.status == 200, (path, resp.body)
        assert resp.headers["x-model-id"] == "model-b"


@pytest.mark.parametrize("model", ["no-such-model", 'evil"model\\with`quotes', "ünïcode"])
def test_unknown_model_gets_404_json_naming_it(gateway: Gateway, model: str) -> None:
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat(model), BEARER)
    error = assert_openai_error(resp, 404, "model_not_found")
    assert error["param"] == "model"
    assert error["message"] == f"The model `{model}` does not exist on this gateway."


def test_unknown_model_sent_with_unicode_escapes_still_gets_valid_json(gateway: Gateway) -> None:
    """HAProxy 2.6's json_query decodes \\u00fc to a lone byte (json(utf8s) then drops it) and gives up on
    escapes past U+00FF: the message may lose characters, but it must stay a parseable OpenAI error."""
    for model in ("ünïcode", "line\u2028sep"):
        body = json.dumps(chat(model), ensure_ascii=True).encode()
        resp = call(gateway.port, "POST", "/v1/chat/completions", body, BEARER)
        assert_openai_error(resp, 404, "model_not_found")


@pytest.mark.parametrize(
    "body", [b'{"messages": []}', b"not json", b'{"model": 42}'], ids=["absent", "junk", "number"]
)
def test_missing_model_gets_404_json(gateway: Gateway, body: bytes) -> None:
    resp = call(gateway.port, "POST", "/v1/chat/completions", body, BEARER)
    assert_openai_error(resp, 404, "model_not_found")


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/nope"), ("GET", "/v1/chat/completions"), ("GET", "/")]
)
def test_unknown_path_gets_404_json(gateway: Gateway, method: str, path: str) -> None:
    body = chat("model-a") if method == "POST" else None
    resp = call(gateway.port, method, path, body, BEARER)
    error = assert_openai_error(resp, 404, "unknown_path")
    assert f"{method} {path}" in error["message"]


def test_model_without_a_live_instance_gets_503_json(gateway: Gateway) -> None:
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-dead"), BEARER)
    assert_openai_error(resp, 503, "model_unavailable")


def body_of_size(size: int, model: str) -> bytes:
    """A chat request of exactly ``size`` bytes with "model" written last, as the OpenAI SDK does."""
    head, tail = b'{"messages": [{"role": "user", "content": "', b'"}], "model": "' + model.encode() + b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_dead_instance_is_hidden_by_retry_and_redispatch(gateway: Gateway) -> None:
    for _ in range(8):
        resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-c"), BEARER)
        assert resp.status == 200, resp.body
        assert resp.headers["x-instance-id"] == "model-c-0"


def backend_stats(gateway: Gateway, backend_id: str) -> dict[str, int]:
    return call(gateway.backend_ports[backend_id], "GET", "/stats").json()


def test_client_hang_up_cancels_the_backend_request(gateway: Gateway) -> None:
    aborted_before = backend_stats(gateway, "model-a-0")["aborted"]
    body = json.dumps(chat("model-a", fake_delay_ms=5000)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(head + body)
        time.sleep(0.3)  # the request is now at the backend, which will sit on it for 5 s
    deadline = time.monotonic() + 2
    while backend_stats(gateway, "model-a-0")["aborted"] == aborted_before:
        assert time.monotonic() < deadline, "the backend kept working for a client that had gone"
        time.sleep(0.02)


def test_body_of_exactly_the_limit_still_routes(gateway: Gateway) -> None:
    body = body_of_size(MAX_BODY_BYTES, "model-b")
    assert len(body) == MAX_BODY_BYTES
    resp = call(gateway.port, "POST", "/v1/chat/completions", body, BEARER)
    assert resp.status == 200, resp.body
    assert resp.json()["usage"]["prompt_tokens"] == MAX_BODY_BYTES


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES])
def test_body_over_the_limit_gets_413_naming_the_limit(gateway: Gateway, size: int) -> None:
    body = body_of_size(size, "model-a")
    resp = call(gateway.port, "POST", "/v1/chat/completions", body, BEARER)
    error = assert_openai_error(resp, 413, "request_too_large")
    assert str(MAX_BODY_BYTES) in error["message"]


def test_long_prompt_with_model_written_last_still_routes(gateway: Gateway, client: openai.OpenAI) -> None:
    prompt = "lorem ipsum " * (200_000 // 12)
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "model": "model-b"}).encode()
    assert 200_000 < len(body) <= MAX_BODY_BYTES and body.index(b'"model"') > body.index(b'"messages"')
    resp = call(gateway.port, "POST", "/v1/chat/completions", body, BEARER)
    assert resp.status == 200, resp.body[:300]
    assert resp.json()["usage"]["prompt_tokens"] == len(body)
    # The same through the official client, whichever order it writes the fields in.
    completion = client.chat.completions.create(
        model="model-a", messages=[{"role": "user", "content": prompt}]
    )
    assert completion.choices[0].message.content == "hello from model-a-0"


def test_models_endpoint_lists_every_model_to_a_key_holder_only(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    assert sorted(model.id for model in client.models.list()) == [
        "model-a",
        "model-b",
        "model-c",
        "model-dead",
    ]
    listing = call(gateway.port, "GET", "/v1/models", headers=BEARER).json()
    assert listing["object"] == "list"
    assert all(entry["object"] == "model" and entry["owned_by"] == "llmfleet" for entry in listing["data"])
    assert_openai_error(call(gateway.port, "GET", "/v1/models"), 401, "invalid_api_key")


def test_stream_arrives_event_by_event(gateway: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=REQUEST_TIMEOUT_S)
    try:
        headers = {"Content-Type": "application/json", **BEARER}
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("model-a", stream=True)), headers)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type") == "text/event-stream"
        assert resp.getheader("x-model-id") == "model-a"
        arrivals: list[float] = []
        received = b""
        while chunk := resp.read1(65536):
            arrivals.append(time.monotonic())
            received += chunk
    finally:
        conn.close()
    events = [line for line in received.decode().split("\n\n") if line.startswith("data: ")]
    assert len(events) == STREAM_CHUNKS + 2 and events[-1] == "data: [DONE]"
    assert len(arrivals) > 1, "the whole stream arrived as one blob: the gateway buffered it"
    # The backend spaces its events STREAM_CHUNK_MS apart, (STREAM_CHUNKS - 1) * 50 ms = 200 ms in all.
    assert arrivals[-1] - arrivals[0] > 0.1


def test_stream_through_the_official_client(client: openai.OpenAI) -> None:
    arrivals: list[float] = []
    text = ""
    with client.chat.completions.create(
        model="model-b", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as stream:
        for chunk in stream:
            arrivals.append(time.monotonic())
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    assert text == "".join(f"tok{index} " for index in range(STREAM_CHUNKS))
    assert arrivals[-1] - arrivals[0] > 0.1


def test_official_client_sees_gateway_errors_as_api_errors(gateway: Gateway) -> None:
    bad = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="sk-nope-0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.chat.completions.create(model="model-a", messages=[{"role": "user", "content": "hi"}])
    assert auth.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        good.chat.completions.create(model="model-z", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"


def access_log_line(gateway: Gateway, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = gateway.log_path.read_bytes().decode("utf-8", errors="replace")
        line = next((entry for entry in log.splitlines() if f"id={request_id} " in entry), "")
        if line:
            return line
        time.sleep(0.05)
    pytest.fail(f"no access-log line with id={request_id} in {gateway.log_path}")


def test_access_log_names_request_key_and_model_but_not_the_key(gateway: Gateway) -> None:
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), BEARER)
    line = access_log_line(gateway, resp.headers["x-request-id"])
    assert 'key="default"' in line and 'model="model-a"' in line and "model_model-a/model-a-0 200" in line
    assert KEY not in gateway.log_path.read_bytes().decode("utf-8", errors="replace")


def test_client_supplied_model_cannot_forge_access_log_lines(gateway: Gateway) -> None:
    forged = 'x"\nforged key="admin" ü'
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat(forged), BEARER)
    assert resp.status == 404
    line = access_log_line(gateway, resp.headers["x-request-id"])
    assert 'model="x\\"\\nforged key=\\"admin\\" \\u00fc"' in line
    log = gateway.log_path.read_bytes()
    assert b"\nforged" not in log and log.decode("ascii")


def test_metrics_port_serves_prometheus_text(gateway: Gateway) -> None:
    resp = call(gateway.metrics_port, "GET", "/metrics")
    assert resp.status == 200
    text = resp.body.decode()
    assert "haproxy_process_" in text
    assert 'haproxy_backend_active_servers{proxy="model_model-b"} 2' in text
    assert call(gateway.metrics_port, "GET", "/other").status == 404


def admin_command(gateway: Gateway, command: str) -> str:
    return keys_admin_command(gateway.runtime_dir / "haproxy.sock", command)


def wait_for_status(gateway: Gateway, headers: dict[str, str], status: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers).status != status:
        assert time.monotonic() < deadline, f"no {status} within {START_TIMEOUT_S}s"
        time.sleep(0.05)


def server_states(gateway: Gateway) -> dict[str, dict[str, str]]:
    """{backend/server: row of "show stat"} from the admin socket."""
    return {
        f"{row['pxname']}/{row['svname']}": row for row in stat_rows(gateway.runtime_dir / "haproxy.sock")
    }


def test_health_checks_pass_on_live_instances_and_take_dead_ones_down(gateway: Gateway) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while (states := server_states(gateway))["model_model-dead/model-dead-0"]["status"] != "DOWN":
        assert time.monotonic() < deadline, states["model_model-dead/model-dead-0"]
        time.sleep(0.2)
    for server in ("model_model-a/model-a-0", "model_model-b/model-b-0", "model_model-b/model-b-1"):
        assert states[server]["status"] == "UP", states[server]
        assert states[server]["check_status"] == "L7OK", states[server]


def test_drain_waits_for_in_flight_requests_and_sends_new_ones_elsewhere(gateway: Gateway) -> None:
    socket_path = gateway.runtime_dir / "haproxy.sock"
    slow = chat("model-b", fake_delay_ms=1500)
    results: dict[str, Response] = {}
    worker = threading.Thread(
        target=lambda: results.setdefault(
            "slow", call(gateway.port, "POST", "/v1/chat/completions", slow, BEARER)
        )
    )
    worker.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    busy = None
    while busy is None:
        assert time.monotonic() < deadline, "the slow request never reached an instance"
        for name in ("model-b-0", "model-b-1"):
            if server_state(socket_path, "model-b", name).sessions:
                busy = name
        time.sleep(0.02)
    idle = "model-b-1" if busy == "model-b-0" else "model-b-0"

    outcome = drain(socket_path, "model-b", busy, timeout_s=START_TIMEOUT_S)
    worker.join(timeout=REQUEST_TIMEOUT_S)
    assert outcome["drained"] is True and outcome["in_flight_at_start"] == 1
    assert outcome["in_flight_left"] == 0 and outcome["waited_s"] > 0, outcome
    assert results["slow"].status == 200 and results["slow"].headers["x-backend-id"] == busy
    assert server_state(socket_path, "model-b", busy).status == "DRAIN"
    served_by = {
        call(gateway.port, "POST", "/v1/chat/completions", chat("model-b"), BEARER).headers["x-backend-id"]
        for _ in range(6)
    }
    assert served_by == {idle}, "a drained instance must get no new requests"

    assert readmit(socket_path, "model-b", busy) == {"in_rotation": True, "readmitted": True}
    assert server_state(socket_path, "model-b", busy).status == "UP"
    # Not in rotation is not an error: nothing to drain (a first deploy, a new instance).
    assert drain(socket_path, "model-b", "model-b-9", timeout_s=1)["in_rotation"] is False
    assert drain(gateway.runtime_dir / "absent.sock", "model-b", busy, timeout_s=1)["in_rotation"] is False


def test_drain_gives_up_waiting_at_its_bound(gateway: Gateway) -> None:
    socket_path = gateway.runtime_dir / "haproxy.sock"
    slow = chat("model-a", fake_delay_ms=3000)
    worker = threading.Thread(target=lambda: call(gateway.port, "POST", "/v1/chat/completions", slow, BEARER))
    worker.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while server_state(socket_path, "model-a", "model-a-0").sessions == 0:
        assert time.monotonic() < deadline, "the slow request never reached model-a-0"
        time.sleep(0.02)
    try:
        outcome = drain(socket_path, "model-a", "model-a-0", timeout_s=0.5)
        assert outcome["in_flight_left"] == 1 and outcome["waited_s"] >= 0.5, outcome
    finally:
        readmit(socket_path, "model-a", "model-a-0")
        worker.join(timeout=REQUEST_TIMEOUT_S)


# The tests below change the running gateway (they add keys), so they come last.


def worker_pid(gateway: Gateway) -> int:
    info = admin_command(gateway, "show info")
    return int(re.search(r"^Pid: (\d+)$", info, re.M).group(1))  # type: ignore[union-attr]


def test_keys_add_and_revoke_take_effect_without_a_reload(gateway: Gateway) -> None:
    pid = worker_pid(gateway)
    keys_dir = Path(gateway.state.keys_dir)
    secret = add_key(keys_dir, "runtime", KeyPolicy(models=["model-b"]))
    assert write_and_push_maps(gateway.state, gateway.plans)["pushed_to_running_gateway"] is True
    headers = {"Authorization": f"Bearer {secret}"}
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-b"), headers)
    assert resp.status == 200, resp.body
    assert 'key="runtime"' in access_log_line(gateway, resp.headers["x-request-id"])
    assert_openai_error(call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers), 403,
                        "model_not_allowed")  # fmt: skip
    listed = call(gateway.port, "GET", "/v1/models", headers=headers).json()
    assert [entry["id"] for entry in listed["data"]] == ["model-b"]
    # The secret is shown once and stored nowhere: only its hash is in the store and the map.
    for path in [*keys_dir.iterdir(), *Path(gateway.state.settings.config_dir).iterdir()]:
        assert secret not in path.read_text(), path

    revoke_key(keys_dir, "runtime")
    write_and_push_maps(gateway.state, gateway.plans)
    assert_openai_error(
        call(gateway.port, "POST", "/v1/chat/completions", chat("model-b"), headers), 401, "invalid_api_key"
    )
    assert worker_pid(gateway) == pid, "a key change must not reload HAProxy"


def seconds_to_window_end(window: int) -> float:
    return window - time.time() % window


def wait_out_window_end(window: int, margin_s: float) -> None:
    """Counts reset at UTC minute/day boundaries; a test that spans one would see a reset, not a bug."""
    left = seconds_to_window_end(window)
    if left < margin_s:
        time.sleep(left + 0.5)


def tokens_of(resp: Response) -> int:
    return int(resp.json()["usage"]["total_tokens"])


def test_key_may_only_use_its_models(gateway: Gateway) -> None:
    narrow = {"Authorization": f"Bearer {NARROW_KEY}"}
    assert call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), narrow).status == 200
    error = assert_openai_error(
        call(gateway.port, "POST", "/v1/chat/completions", chat("model-b"), narrow), 403, "model_not_allowed"
    )
    assert "`model-b`" in error["message"] and error["param"] == "model"
    # An unknown model stays a 404 for every key: 403 only says "exists, but not for you".
    assert_openai_error(
        call(gateway.port, "POST", "/v1/chat/completions", chat("model-z"), narrow), 404, "model_not_found"
    )
    listed = call(gateway.port, "GET", "/v1/models", headers=narrow).json()
    assert [entry["id"] for entry in listed["data"]] == ["model-a"]


def test_requests_per_minute_limit_gives_429_with_retry_after(gateway: Gateway) -> None:
    wait_out_window_end(60, 5)
    headers = {"Authorization": f"Bearer {RPM_KEY}"}
    statuses = [
        call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers).status for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers)
    error = assert_openai_error(resp, 429, "rate_limit_exceeded")
    assert resp.headers["retry-after"] == "60" and "rpm" in error["message"]
    # Another key is not affected.
    assert call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), BEARER).status == 200


def test_tokens_per_minute_limit_counts_response_usage(gateway: Gateway) -> None:
    wait_out_window_end(60, 10)
    headers = {"Authorization": f"Bearer {TPM_KEY}"}
    first = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers)
    assert first.status == 200 and first.headers["x-ratelimit-remaining-tokens"] == "100"
    spent = tokens_of(first)
    assert 0 < spent < 100, "the test needs a first request that fits the limit"
    wait_for_key_tokens(gateway, "tpm100", "minute", spent)
    # A stream counts too: its usage arrives in the last chunk.
    streamed = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a", stream=True), headers)
    assert streamed.status == 200
    assert streamed.headers["x-ratelimit-remaining-tokens"] == str(100 - spent)
    stream_tokens = int(re.findall(rb'"total_tokens": (\d+)', streamed.body)[-1])
    assert spent + stream_tokens >= 100, "the test needs the stream to cross the limit"
    wait_for_key_tokens(gateway, "tpm100", "minute", spent + stream_tokens)
    resp = call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), headers)
    error = assert_openai_error(resp, 429, "rate_limit_exceeded")
    assert "tokens_per_minute" in error["message"]
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    metrics = call(gateway.metrics_port, "GET", "/metrics/keys").body.decode()
    assert (
        f'llmfleet_gateway_key_tokens_window{{key="tpm100",window="minute"}} {spent + stream_tokens}'
        in metrics
    )


def wait_for_key_tokens(gateway: Gateway, key: str, window: str, expected: int) -> None:
    """HAProxy accounts a response's tokens when it closes the stream, just after the client has it all."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (seen := key_window_tokens(gateway, key, window)) != expected:
        assert time.monotonic() < deadline, f"{key} {window}: {seen} tokens, expected {expected}"
        time.sleep(0.05)


def key_window_tokens(gateway: Gateway, key: str, window: str) -> int | None:
    metrics = call(gateway.metrics_port, "GET", "/metrics/keys").body.decode()
    match = re.search(
        rf'^llmfleet_gateway_key_tokens_window{{key="{key}",window="{window}"}} (\d+)$', metrics, re.M
    )
    return int(match.group(1)) if match else None


def test_metrics_per_key_and_model(gateway: Gateway) -> None:
    call(gateway.port, "POST", "/v1/chat/completions", chat("model-b"), BEARER)
    resp = call(gateway.metrics_port, "GET", "/metrics/keys")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.body.decode()
    series = r'^llmfleet_gateway_requests_total\{key="default",model="model-b",code="200"\} [1-9]\d*$'
    assert re.search(series, text, re.M), text
    assert re.search(r'^llmfleet_gateway_tokens_total\{key="default",model="model-b"\} [1-9]\d*$', text, re.M)


def test_sigusr2_reload_picks_up_new_keys_and_finishes_running_streams(gateway: Gateway) -> None:
    assert int((gateway.runtime_dir / "haproxy.pid").read_text()) == gateway.proc.pid
    new = "sk-llmfleet-added-by-reload-0123456789abc"
    headers = {"Authorization": f"Bearer {new}"}
    config_dir = gateway.config_path.parent
    (config_dir / "keys.map").write_text(
        (config_dir / "keys.map").read_text() + f"{hash_key(new)} reloaded\n"
    )
    (config_dir / "key-models.map").write_text((config_dir / "key-models.map").read_text() + "reloaded/* 1\n")

    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=REQUEST_TIMEOUT_S)
    try:
        body = json.dumps(chat("model-a", stream=True))
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json", **BEARER})
        resp = conn.getresponse()
        received = resp.read1(65536)
        gateway.proc.send_signal(signal.SIGUSR2)
        wait_for_status(gateway, headers, 200)
        while chunk := resp.read1(65536):
            received += chunk
    finally:
        conn.close()
    assert received.decode().rstrip().endswith("data: [DONE]"), "the reload cut a running stream"
    assert gateway.proc.poll() is None, gateway.log_path.read_text()
    assert call(gateway.port, "POST", "/v1/chat/completions", chat("model-a"), BEARER).status == 200


def test_token_counts_survive_a_reload_including_a_stream_that_ends_after_it(gateway: Gateway) -> None:
    """The old process finishes its stream after the reload and journals the tokens; the new process
    replays and follows the journal, so the quota sees every token spent on either process."""
    wait_out_window_end(86400, 30)
    request_a = chat("model-a", messages=[{"role": "user", "content": "count me before the reload"}])
    request_b = chat("model-a", stream=True)
    # The fake backend bills len(body) + 3 for a completion and len(body) + 5 for a stream.
    expected_a = len(json.dumps(request_a, ensure_ascii=False)) + 3
    expected_b = len(json.dumps(request_b, ensure_ascii=False)) + STREAM_CHUNKS
    secret = add_key(
        Path(gateway.state.keys_dir), "daily", KeyPolicy(tokens_per_day=expected_a + expected_b + 1)
    )
    write_and_push_maps(gateway.state, gateway.plans)
    headers = {"Authorization": f"Bearer {secret}"}

    first = call(gateway.port, "POST", "/v1/chat/completions", request_a, headers)
    assert first.status == 200 and tokens_of(first) == expected_a
    old_worker = worker_pid(gateway)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(request_b),
            {"Content-Type": "application/json", **headers},
        )
        resp = conn.getresponse()
        received = resp.read1(65536)
        gateway.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + START_TIMEOUT_S
        while worker_pid(gateway) == old_worker:
            assert time.monotonic() < deadline, "no new worker after SIGUSR2"
            time.sleep(0.05)
        while chunk := resp.read1(65536):
            received += chunk
    finally:
        conn.close()
    assert received.decode().rstrip().endswith("data: [DONE]")
    assert int(re.findall(rb'"total_tokens": (\d+)', received)[-1]) == expected_b

    # The new worker learns of the stream's tokens from the journal within its follow interval (1 s).
    wait_for_key_tokens(gateway, "daily", "day", expected_a + expected_b)
    # Under the limit by one token: admitted; it crosses the limit, so the next one is refused.
    assert call(gateway.port, "POST", "/v1/chat/completions", request_a, headers).status == 200
    wait_for_key_tokens(gateway, "daily", "day", 2 * expected_a + expected_b)
    resp_over = call(gateway.port, "POST", "/v1/chat/completions", request_a, headers)
    error = assert_openai_error(resp_over, 429, "insufficient_quota")
    assert "tokens_per_day" in error["message"]
    assert 0 < int(resp_over.headers["retry-after"]) <= 86400
