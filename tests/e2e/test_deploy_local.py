"""End to end on this machine: the real deploy playbook, real vLLM (CPU build), real HAProxy.

No fake server stands in for vLLM here. The playbooks run with tests/e2e/isolated-vars.yml, which
moves every path, port and the supervisord instance aside, so a developer's own `make deploy` is
not disturbed. Tests run in file order and share one deployment (deploying takes minutes).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
VARS_FILE = REPO / "tests" / "e2e" / "isolated-vars.yml"
VARS = yaml.safe_load(VARS_FILE.read_text())
BIN = Path(sys.executable).parent
MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
GATEWAY = VARS["llmfleet_common_gateway_url"]
REGISTRY = Path(VARS["llmfleet_common_state_dir"]) / "deployments"
LOG_DIR = Path(VARS["llmfleet_common_log_dir"])
# Verdicts older than this run are not this run's (the log directory outlives a deployment).
STARTED = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
SUPERVISORCTL = [
    "/opt/llmfleet/supervisor-venv/bin/supervisorctl",
    "-c",
    f"{VARS['llmfleet_common_config_dir']}/supervisor/supervisord.conf",
]


def playbook(name: str, *extra: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), name, "-e", f"@{VARS_FILE}", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
    )


def recap_changed(output: str) -> int:
    match = re.search(r"^localhost\s+: ok=\d+\s+changed=(\d+)", output, re.MULTILINE)
    assert match, f"no PLAY RECAP in output:\n{output[-3000:]}"
    return int(match.group(1))


def status_json() -> dict:
    proc = subprocess.run(
        [str(BIN / "llmfleet"), "status", "--json", "--registry", str(REGISTRY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def http(method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{GATEWAY}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def deployed():
    proc = playbook("deploy-model.yml", "-e", f"model={MODEL}")
    assert proc.returncode == 0, f"deploy failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    yield proc
    # Leave nothing running: undeploy what a test did not, and stop this test's supervisord.
    for name in (MODEL, EMBEDDING_MODEL):
        if (REGISTRY / f"{name}.json").exists():
            playbook("undeploy-model.yml", "-e", f"model={name}")
    subprocess.run([*SUPERVISORCTL, "shutdown"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def api_key(deployed) -> str:
    (model,) = status_json()["models"]
    return Path(model["api_key_file"]).read_text().strip()


def test_deploy_prints_a_summary_with_endpoint_key_curl_and_phase_times(deployed):
    out = deployed.stdout
    assert f"endpoint:  {GATEWAY}/v1" in out
    assert "API key:   /etc/llmfleet-e2e/gateway/keys/default.key" in out
    assert "curl -sS" in out
    assert re.search(
        r"phase seconds: preflight [\d.]+, weights [\d.]+, instances [\d.]+, gateway [\d.]+", out
    )


def test_status_lists_the_deployment(deployed):
    (model,) = status_json()["models"]
    assert model["model"] == MODEL
    assert model["endpoint"] == f"{GATEWAY}/v1"
    assert Path(model["api_key_file"]).stat().st_mode & 0o077 == 0, "the key file must be private"
    assert (Path(model["weights_path"]) / "manifest.json").is_file()
    (instance,) = model["instances"]
    assert instance["healthy"] is True
    assert instance["url"] == "http://127.0.0.1:18100/v1"
    assert isinstance(instance["pid"], int) and pid_alive(instance["pid"])


def golden_verdict(instance: str) -> dict:
    """The readiness gate's golden-output verdict for an instance, from this run."""
    report = json.loads((LOG_DIR / f"golden-{instance}.json").read_text())
    assert datetime.datetime.fromisoformat(report["checked_at"]) >= STARTED, "a verdict from an earlier run"
    assert report["golden_check"] == "fail", "the default: a mismatch fails the deploy"
    return report["golden"]


def test_the_gate_compared_vllm_with_the_reference_golden_output(deployed):
    """Recorded at import with transformers (greedy, 32 tokens), staged beside the weights, and vLLM's
    greedy answer to the same chat prompt passed the rule (llmfleet.weights.golden.Rule)."""
    (model,) = status_json()["models"]
    golden = json.loads((Path(model["weights_path"]) / "golden.json").read_text())
    assert golden["output"]["reference"]["implementation"] == "transformers"
    assert len(golden["output"]["token_ids"]) == 32
    verdict = golden_verdict(f"{MODEL}-0")
    assert verdict["status"] == "match", verdict
    assert verdict["kind"] == "chat" and verdict["compared"] == 32


def test_vllm_allocated_exactly_the_planned_kv_cache(deployed):
    (model,) = status_json()["models"]
    (instance,) = model["instances"]
    log = Path(instance["log"]).read_text()
    assert f"CPU KV cache size: {instance['kv_cache_tokens']:,} tokens" in log


def test_chat_completion_through_the_gateway(api_key):
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=120)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello! Who are you?"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.model == MODEL
    assert reply.choices[0].message.content.strip()


def test_streamed_chat_arrives_in_several_chunks(api_key):
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=120)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=32,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1, f"expected a stream of several chunks, got {pieces}"
    assert "".join(pieces).strip()


def test_missing_or_wrong_key_is_401(deployed):
    for key in (None, "sk-wrong"):
        code, body = http("POST", "/v1/chat/completions", {"model": MODEL, "messages": []}, key=key)
        assert code == 401
        assert body["error"]["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="sk-wrong", timeout=30)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_unknown_model_is_an_openai_style_404(api_key):
    code, body = http(
        "POST",
        "/v1/chat/completions",
        {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
        key=api_key,
    )
    assert code == 404
    assert body["error"]["code"] == "model_not_found"
    assert "no-such-model" in body["error"]["message"]
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=30)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_models_endpoint_lists_the_model(api_key):
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=30)
    assert [m.id for m in client.models.list()] == [MODEL]


def llmfleet_keys(*args: str) -> subprocess.CompletedProcess[str]:
    gateway_config = f"{VARS['llmfleet_common_config_dir']}/gateway"
    return subprocess.run(
        [str(BIN / "llmfleet"), "keys", *args, "--gateway-config-dir", gateway_config],
        capture_output=True,
        text=True,
        timeout=60,
    )


def key_tokens_this_minute(key: str) -> int | None:
    metrics_url = GATEWAY.rsplit(":", 1)[0] + f":{VARS['gateway_metrics_port']}/metrics/keys"
    with urllib.request.urlopen(metrics_url, timeout=30) as resp:
        text = resp.read().decode()
    match = re.search(
        rf'^llmfleet_gateway_key_tokens_window{{key="{key}",window="minute"}} (\d+)$', text, re.M
    )
    return int(match.group(1)) if match else None


def test_token_quota_counts_vllm_stream_usage_and_answers_429(deployed):
    """A key made live without a reload; a real vLLM stream spends its tokens; the next request is 429."""
    if 60 - time.time() % 60 < 20:  # the per-minute window must not roll over mid-test
        time.sleep(60 - time.time() % 60 + 1)
    added = llmfleet_keys("add", "e2e-quota", "--models", MODEL, "--tokens-per-minute", "1", "--json")
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["pushed_to_running_gateway"] is True
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=result["key"], timeout=120, max_retries=0)
    try:
        # No stream_options from the client: vLLM's --enable-force-include-usage puts usage in the stream.
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=8,
                temperature=0,
                stream=True,
            )
        )
        usage = [c.usage for c in chunks if c.usage is not None]
        assert usage, "vLLM sent no usage in the stream"
        # HAProxy accounts the tokens when it closes the stream, a moment after the client has it all.
        deadline = time.monotonic() + 5
        while key_tokens_this_minute("e2e-quota") != usage[-1].total_tokens:
            assert time.monotonic() < deadline, (key_tokens_this_minute("e2e-quota"), usage[-1].total_tokens)
            time.sleep(0.1)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
        assert refused.value.response.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        revoked = llmfleet_keys("revoke", "e2e-quota")
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def vllm_requests_running(instance_url: str) -> float:
    with urllib.request.urlopen(instance_url.removesuffix("/v1") + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([\d.]+)$", text, re.M)
    assert values, "vLLM's /metrics has no vllm:num_requests_running"
    return sum(float(v) for v in values)


def test_client_hang_up_cancels_the_generation_in_vllm(api_key):
    (instance,) = status_json()["models"][0]["instances"]
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()
    req = urllib.request.Request(
        f"{GATEWAY}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    resp = urllib.request.urlopen(req, timeout=120)
    try:
        for _ in range(3):
            assert resp.readline()  # the stream has started
        assert vllm_requests_running(instance["url"]) == 1
    finally:
        resp.close()
    deadline = time.monotonic() + 15
    while vllm_requests_running(instance["url"]) != 0:
        assert time.monotonic() < deadline, "vLLM kept generating for a client that hung up"
        time.sleep(0.2)


def test_staged_weights_verify_against_their_manifest(deployed):
    proc = subprocess.run(
        [str(BIN / "llmfleet"), "weights", "verify", MODEL, "--registry", str(REGISTRY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout


def test_second_deploy_changes_nothing_and_keeps_vllm_running(deployed):
    (before,) = status_json()["models"][0]["instances"]
    proc = playbook("deploy-model.yml", "-e", f"model={MODEL}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap_changed(proc.stdout) == 0, "second deploy changed something:\n" + "\n".join(
        line for line in proc.stdout.splitlines() if line.startswith(("TASK", "changed"))
    )
    (after,) = status_json()["models"][0]["instances"]
    assert after["pid"] == before["pid"], "vLLM was restarted"


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def group_members(pgid: int) -> set[int]:
    """Live processes of a process group: vLLM's API server leads one holding EngineCore and Worker."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            group = _pgrp(int(entry.name))
            if stat and stat[0] != "Z" and group == pgid:
                found.add(int(entry.name))
    return found


def _ppid(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[1] if stat else None


def _pgrp(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def test_a_crashed_instance_is_restarted_leaves_nothing_behind_and_is_readmitted(api_key):
    (before,) = status_json()["models"][0]["instances"]
    # The vLLM API server is the wrapper's only child and leads its own process group.
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _ppid(int(p.name)) == before["pid"]
    ]
    assert len(children) == 1, f"expected one vLLM API server under the wrapper, got {children}"
    (api_server,) = children
    old_tree = group_members(api_server)
    engine = [pid for pid in old_tree if b"VLLM::" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(engine) >= 2, f"expected EngineCore and Worker in the API server's group {old_tree}"
    # kill -9 the API server, as a crash or the OOM killer would.
    os.kill(api_server, 9)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        (now,) = status_json()["models"][0]["instances"]
        if now["pid"] not in (None, before["pid"]):
            break
        time.sleep(1)
    assert now["pid"] not in (None, before["pid"]), "supervisord did not restart the instance"
    gate = [str(BIN / "llmfleet"), "ready", "--url", now["url"].removesuffix("/v1"), "--model", MODEL]
    ready = subprocess.run([*gate, "--timeout", "600"], capture_output=True, text=True, timeout=660)
    assert ready.returncode == 0, ready.stderr
    survivors = {pid for pid in old_tree if (proc_stat(pid) or ("Z", 0))[0] != "Z"}
    assert not survivors, f"processes of the crashed instance live on: {survivors}"
    # The gateway re-admits the instance after two passing health checks (rise 2, inter 2s).
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    deadline = time.monotonic() + 30
    code, body = http("POST", "/v1/chat/completions", chat, key=api_key)
    while code == 503 and time.monotonic() < deadline:
        time.sleep(1)
        code, body = http("POST", "/v1/chat/completions", chat, key=api_key)
    assert code == 200 and body["choices"][0]["message"]["content"]


def test_unknown_model_fails_with_the_catalog_names_and_disturbs_nothing(api_key):
    proc = playbook("deploy-model.yml", "-e", "model=no-such-model", timeout=300)
    assert proc.returncode != 0
    assert "unknown model 'no-such-model'" in proc.stdout
    assert MODEL in proc.stdout, "the error must list the catalog's models"
    code, body = http(
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        key=api_key,
    )
    assert code == 200 and body["choices"][0]["message"]["content"]


def test_a_second_model_deploys_beside_the_first(api_key):
    # inventories/local asks for two replicas of the embedding model (deployment_plan_instances_by_model).
    proc = playbook("deploy-model.yml", "-e", f"model={EMBEDDING_MODEL}")
    assert proc.returncode == 0, proc.stdout[-6000:]
    models = {m["model"]: m for m in status_json()["models"]}
    assert set(models) == {MODEL, EMBEDDING_MODEL}
    replicas = models[EMBEDDING_MODEL]["instances"]
    assert [i["name"] for i in replicas] == [f"{EMBEDDING_MODEL}-0", f"{EMBEDDING_MODEL}-1"]
    assert all(i["healthy"] for i in replicas), replicas
    urls = [inst["url"] for m in models.values() for inst in m["instances"]]
    assert len(set(urls)) == len(urls), f"two instances share a port: {urls}"
    # Both replicas serve /v1/embeddings through the gateway: it names the instance that answered.
    served_by = set()
    for n in range(6):
        req = urllib.request.Request(
            f"{GATEWAY}/v1/embeddings",
            data=json.dumps({"model": EMBEDDING_MODEL, "input": f"replica probe {n}"}).encode(),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert len(json.load(resp)["data"][0]["embedding"]) == 384
            served_by.add(resp.headers["X-Instance-Id"])
    assert served_by == {i["name"] for i in replicas}
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=120)
    vectors = client.embeddings.create(model=EMBEDDING_MODEL, input=["a cat", "a dog"]).data
    assert [len(v.embedding) for v in vectors] == [384, 384]
    for instance in models[EMBEDDING_MODEL]["instances"]:
        verdict = golden_verdict(instance["name"])
        assert verdict["status"] == "match" and verdict["cosine"] >= 0.999, verdict
    assert sorted(m.id for m in client.models.list()) == sorted([MODEL, EMBEDDING_MODEL])
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert reply.choices[0].message.content


def test_undeploy_removes_one_model_and_leaves_the_other_serving(api_key):
    (instance,) = next(m for m in status_json()["models"] if m["model"] == MODEL)["instances"]
    proc = playbook("undeploy-model.yml", "-e", f"model={MODEL}", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [m["model"] for m in status_json()["models"]] == [EMBEDDING_MODEL]
    deadline = time.monotonic() + 60
    while pid_alive(instance["pid"]) and time.monotonic() < deadline:
        time.sleep(1)
    assert not pid_alive(instance["pid"]), "the vLLM process is still running"
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    code, body = http("POST", "/v1/chat/completions", chat, key=api_key)
    assert code == 404 and body["error"]["code"] == "model_not_found", "the gateway still routes the model"
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=api_key, timeout=120)
    (vector,) = client.embeddings.create(model=EMBEDDING_MODEL, input="still here").data
    assert len(vector.embedding) == 384
    assert [m.id for m in client.models.list()] == [EMBEDDING_MODEL]


def test_undeploying_the_last_model_keeps_the_gateway_answering(api_key):
    proc = playbook("undeploy-model.yml", "-e", f"model={EMBEDDING_MODEL}", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert status_json()["models"] == []
    code, body = http("GET", "/v1/models", key=api_key)
    assert code == 200 and body["data"] == []
    code, _ = http("GET", "/v1/models")
    assert code == 401, "the gateway itself must keep running"
