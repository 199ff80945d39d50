"""Golden outputs: the comparison rule, the gate's step, and recording (the reference stands in).

The rule's thresholds come from measurements (README, "Golden outputs"); these tests pin what the
rule does on each side of them, with made-up outputs. The recorder's pure parts (which pooling a
sentence-transformers model asks for) run here; the reference itself runs in tests/test_golden_record.py
and in the end-to-end deploy.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.error
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from llmfleet.cli import main
from llmfleet.errors import GoldenMismatchError, NotReadyError, WeightsError
from llmfleet.weights import golden as g

REPO = Path(__file__).resolve().parents[1]
MANIFEST = {
    "files": {"config.json": {"sha256": "a" * 64, "size": 2}, "w.bin": {"sha256": "b" * 64, "size": 9}}
}
REFERENCE = {
    "implementation": "transformers",
    "transformers": "5",
    "torch": "2",
    "device": "cpu",
    "dtype": "bf16",
}


def chat_output(ids: list[int], margins: list[float] | None = None, **extra: object) -> dict[str, object]:
    return {
        "kind": "chat", "messages": [{"role": "user", "content": "Q?"}], "chat_template": True,
        "prompt": "<u>Q?</u>", "prompt_token_ids": [1, 2, 3], "max_tokens": len(ids), "token_ids": ids,
        "text": "answer", "margins": margins if margins is not None else [3.0] * len(ids),
        "reference": REFERENCE, **extra,
    }  # fmt: skip


def golden_of(output: dict[str, object], manifest: dict = MANIFEST) -> g.Golden:
    return g.Golden(
        model="m", revision="r", weights_sha256=g.weights_digest(manifest), recorded_at="t", output=output
    )


def embedding_output(vector: list[float]) -> dict[str, object]:
    return {"kind": "embedding", "input": "a fox", "input_token_ids": [101, 7, 102], "pooling": "mean",
            "normalize": True, "embedding": vector, "reference": REFERENCE}  # fmt: skip


RULE = g.Rule()


# --- the chat rule ---------------------------------------------------------------------------------


def test_all_tokens_equal_is_a_match():
    verdict = g.compare(golden_of(chat_output([5, 6, 7, 8])), g.Served(prompt_token_ids=[1, 2, 3],
                        token_ids=[5, 6, 7, 8]), RULE)  # fmt: skip
    assert verdict.status == "match" and verdict.common_prefix == 4 and verdict.compared == 4


def test_a_different_rendered_prompt_is_a_mismatch_whatever_the_tokens():
    verdict = g.compare(golden_of(chat_output([5, 6])), g.Served(prompt_token_ids=[1, 2, 9],
                        token_ids=[5, 6]), RULE)  # fmt: skip
    assert verdict.status == "mismatch"
    assert "chat template or the tokenizer" in verdict.detail and "prompt token 2" in verdict.detail


def test_parting_at_a_near_tie_passes_when_the_reference_path_scores_within_the_margin():
    # They part at token 2; scored along the reference's tokens vLLM was never more than 0.25 ahead.
    served = g.Served(prompt_token_ids=[1, 2, 3], token_ids=[5, 6, 9, 9], forced_gaps=[0, 0, 0.25, 0.125])
    verdict = g.compare(golden_of(chat_output([5, 6, 7, 8])), served, RULE)
    assert verdict.status == "match"
    assert verdict.common_prefix == 2
    assert "near-tie" in verdict.detail


def test_parting_where_vllm_scores_the_reference_token_far_below_its_own_is_a_mismatch():
    served = g.Served(prompt_token_ids=[1, 2, 3], token_ids=[5, 6, 9, 9], forced_gaps=[0, 0, 0.25, 1.5])
    verdict = g.compare(golden_of(chat_output([5, 6, 7, 8])), served, RULE)
    assert verdict.status == "mismatch"
    assert "token 3 was 1.500 nats ahead" in verdict.detail


def test_a_tie_at_the_first_token_does_not_excuse_a_wrong_model():
    # A reference torn at token 0 (margin 0.125) whose later tokens vLLM finds far less likely:
    # the tie alone would forgive everything, the scored path does not.
    output = chat_output([5, 6, 7], margins=[0.125, 4.0, 4.0])
    served = g.Served(prompt_token_ids=[1, 2, 3], token_ids=[9, 9, 9], forced_gaps=[0.1, 8.0, 9.0])
    assert g.compare(golden_of(output), served, RULE).status == "mismatch"


def test_without_scores_only_the_reference_margin_where_they_part_decides():
    output = chat_output([5, 6, 7], margins=[3.0, 0.25, 3.0])
    torn = g.compare(golden_of(output), g.Served(token_ids=[5, 9, 9]), RULE)
    assert torn.status == "match" and "nothing after that is checked" in torn.detail
    sure = g.compare(golden_of(output), g.Served(token_ids=[9, 9, 9]), RULE)
    assert sure.status == "mismatch" and "at token 0 of 3" in sure.detail


def test_fewer_tokens_than_asked_is_a_mismatch():
    verdict = g.compare(golden_of(chat_output([5, 6, 7])), g.Served(token_ids=[5, 6]), RULE)
    assert verdict.status == "mismatch" and "returned 2 tokens where 3 were asked for" in verdict.detail


def test_a_server_without_token_ids_must_return_the_same_text():
    output = chat_output([5, 6])
    assert g.compare(golden_of(output), g.Served(text="answer"), RULE).status == "match"
    assert g.compare(golden_of(output), g.Served(text="answer!"), RULE).status == "mismatch"


# --- the embedding rule ----------------------------------------------------------------------------


def test_embedding_cosine_at_or_above_the_threshold_matches():
    verdict = g.compare(
        golden_of(embedding_output([0.6, 0.8, 0.0])), g.Served(embedding=[0.6, 0.8, 0.001]), RULE
    )
    assert verdict.status == "match" and verdict.cosine > 0.9999


def test_embedding_cosine_below_the_threshold_or_other_dimensions_is_a_mismatch():
    low = g.compare(golden_of(embedding_output([1.0, 0.0])), g.Served(embedding=[0.9, 0.1]), RULE)
    assert low.status == "mismatch" and "cosine 0.99" in low.detail
    dims = g.compare(golden_of(embedding_output([1.0, 0.0])), g.Served(embedding=[1.0, 0.0, 0.0]), RULE)
    assert dims.status == "mismatch" and "3 dimensions" in dims.detail


# --- the gate's step -------------------------------------------------------------------------------


def write_staged(tmp_path: Path, golden: g.Golden | None, manifest: dict = MANIFEST) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    if golden is not None:
        (tmp_path / "golden.json").write_bytes(g.to_bytes(golden))
    return tmp_path / "golden.json"


def test_no_golden_file_is_skipped_and_off_asks_nothing(tmp_path):
    path = write_staged(tmp_path, None)
    assert g.check(path, "http://x", "m", "fail").status == "skipped"
    write_staged(tmp_path, golden_of(chat_output([5])))
    asked = []
    verdict = g.check(path, "http://x", "m", "off", ask=lambda *a: asked.append(a))  # type: ignore[arg-type,return-value]
    assert verdict.status == "skipped" and not asked


def test_a_golden_output_of_other_weights_is_refused_not_compared(tmp_path):
    other = {"files": {"w.bin": {"sha256": "c" * 64, "size": 9}}}
    path = write_staged(tmp_path, golden_of(chat_output([5]), manifest=other))
    verdict = g.check(path, "http://x", "m", "warn", ask=lambda *a: pytest.fail("asked"))  # type: ignore[arg-type]
    assert verdict.status == "mismatch" and "other weights" in verdict.detail


def test_a_mismatch_fails_loudly_in_fail_mode_with_the_prompt_and_both_outputs(tmp_path):
    path = write_staged(tmp_path, golden_of(chat_output([5, 6])))
    served = g.Served(
        prompt_token_ids=[1, 2, 3], token_ids=[8, 8], text="wrong words", forced_gaps=[6.0, 6.0]
    )
    verdict = g.check(path, "http://inst", "m", "fail", ask=lambda *_: served)
    assert verdict.status == "mismatch"
    with pytest.raises(GoldenMismatchError) as err:
        g.enforce(verdict, "fail")
    message = str(err.value)
    assert isinstance(err.value, NotReadyError) and err.value.exit_code == 8
    assert "GOLDEN OUTPUT MISMATCH" in message and "http://inst" in message
    assert "<u>Q?</u>" in message, "the prompt"
    assert "[5, 6]" in message and "[8, 8]" in message and "wrong words" in message, "both outputs"
    g.enforce(verdict, "warn")  # warn: the caller prints it, nothing is raised


def test_an_instance_that_cannot_answer_the_golden_request_is_a_mismatch(tmp_path):
    path = write_staged(tmp_path, golden_of(chat_output([5])))

    def down(*_: object) -> g.Served:
        raise urllib.error.URLError("connection refused")

    verdict = g.check(path, "http://x", "m", "warn", ask=down)
    assert verdict.status == "mismatch" and "connection refused" in verdict.detail


def test_a_damaged_golden_file_is_a_weights_error(tmp_path):
    (tmp_path / "golden.json").write_text('{"schema_version": 1, "model": "m"}')
    with pytest.raises(WeightsError, match="not a valid golden output"):
        g.check(tmp_path / "golden.json", "http://x", "m", "fail")


def test_weights_digest_depends_on_paths_and_hashes_only():
    same = {"model": "other", "files": {k: {**v, "size": 0} for k, v in MANIFEST["files"].items()}}
    assert g.weights_digest(MANIFEST) == g.weights_digest(same)
    changed = {"files": {**MANIFEST["files"], "w.bin": {"sha256": "d" * 64, "size": 9}}}
    assert g.weights_digest(MANIFEST) != g.weights_digest(changed)


# --- recording -------------------------------------------------------------------------------------


def fake_run(returncode: int, stdout: str = "", stderr: str = ""):  # type: ignore[no-untyped-def]
    calls = []

    def run(argv, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    return run, calls


def test_record_keeps_the_most_decided_candidate_and_binds_it_to_the_weights(tmp_path):
    outputs = [chat_output([1], margins=[0.5, 0.125]), chat_output([2], margins=[2.0, 1.0]),
               chat_output([3], margins=[1.0, 1.0])]  # fmt: skip
    run, calls = fake_run(0, json.dumps(outputs))
    golden, _ = g.record(tmp_path, "m", "r", MANIFEST, "chat", "bfloat16", "py", run=run)
    assert golden is not None and golden.output.token_ids == [2]
    assert golden.candidates == 3 and golden.weights_sha256 == g.weights_digest(MANIFEST)
    (argv,) = calls
    assert argv[:3] == ["py", str(g.RECORDER), "chat"]
    assert argv.count("--message") == len(g.CHAT_CANDIDATES)
    assert argv[argv.index("--max-tokens") + 1] == str(g.CHAT_TOKENS)
    assert argv[argv.index("--dtype") + 1] == "bfloat16"


def test_record_an_embedding_with_the_served_dtype(tmp_path):
    run, calls = fake_run(0, json.dumps([embedding_output([0.6, 0.8])]))
    golden, _ = g.record(tmp_path, "m", "r", None, "embedding", "float32", "py", run=run)
    assert golden is not None and golden.output.kind == "embedding" and golden.weights_sha256 == ""
    assert calls[0][2:4] == ["embedding", str(tmp_path)] and calls[0][-2:] == ["--dtype", "float32"]
    assert g.bind(golden, MANIFEST).weights_sha256 == g.weights_digest(MANIFEST)


def test_a_reference_that_cannot_run_here_records_nothing_and_says_why(tmp_path):
    run, _ = fake_run(g.UNAVAILABLE, stderr="the reference implementation needs torch and transformers")
    golden, why = g.record(tmp_path, "m", "r", MANIFEST, "chat", "bfloat16", "py", run=run)
    assert golden is None and "needs torch" in why
    golden, why = g.record(tmp_path, "m", "r", MANIFEST, "chat", "bfloat16", str(tmp_path / "no-python"))
    assert golden is None and "no python" in why


def test_a_reference_that_crashes_is_an_error(tmp_path):
    run, _ = fake_run(1, stderr="RuntimeError: shape mismatch")
    with pytest.raises(WeightsError, match="shape mismatch"):
        g.record(tmp_path, "m", "r", MANIFEST, "chat", "bfloat16", "py", run=run)


def _recorder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("golden_record", g.RECORDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_st_model(path: Path, pooling: dict[str, bool], modules: list[str]) -> Path:
    (path / "1_Pooling").mkdir(parents=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 4, **pooling}))
    kind = "sentence_transformers.models."
    entries = [{"idx": i, "path": "1_Pooling" if t == "Pooling" else "", "type": kind + t}
               for i, t in enumerate(modules)]  # fmt: skip
    (path / "modules.json").write_text(json.dumps(entries))
    return path


def test_the_recorder_reads_pooling_and_normalisation_from_the_model_files(tmp_path):
    rec = _recorder()
    mean = write_st_model(
        tmp_path / "a", {"pooling_mode_mean_tokens": True}, ["Transformer", "Pooling", "Normalize"]
    )
    assert rec._pooling(mean) == ("mean", True)
    cls = write_st_model(tmp_path / "b", {"pooling_mode_cls_token": True}, ["Transformer", "Pooling"])
    assert rec._pooling(cls) == ("cls", False)
    odd = write_st_model(
        tmp_path / "c", {"pooling_mode_weightedmean_tokens": True}, ["Transformer", "Pooling"]
    )
    with pytest.raises(rec.Unavailable, match="weightedmean"):
        rec._pooling(odd)
    dense = write_st_model(
        tmp_path / "d", {"pooling_mode_mean_tokens": True}, ["Transformer", "Pooling", "Dense"]
    )
    with pytest.raises(rec.Unavailable, match="Dense"):
        rec._pooling(dense)
    with pytest.raises(rec.Unavailable, match=r"modules\.json"):
        rec._pooling(tmp_path)


def test_the_recorder_without_torch_exits_unavailable(tmp_path):
    # The project venv has no torch: exactly the case of a host whose converter python lacks it.
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is importable here")
    proc = subprocess.run([sys.executable, str(g.RECORDER), "chat", str(tmp_path), "--message", "hi"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == g.UNAVAILABLE and "torch" in proc.stderr


# --- the CLI ---------------------------------------------------------------------------------------


def test_llmfleet_ready_runs_the_golden_check_and_keeps_the_verdict(tmp_path, monkeypatch, capsys):
    path = write_staged(tmp_path, golden_of(chat_output([5, 6])))
    monkeypatch.setattr("llmfleet.deploy.ready.wait_ready", lambda *a, **k: 1.0)
    monkeypatch.setattr("llmfleet.deploy.ready.exercise", lambda *a, **k: [])
    monkeypatch.setattr("llmfleet.deploy.ready.confirm_alive", lambda *a, **k: None)
    monkeypatch.setattr(
        "llmfleet.weights.golden._ask", lambda *_: g.Served(token_ids=[8, 8], text="x", forced_gaps=[5, 5])
    )
    argv = ["ready", "--url", "http://i", "--model", "m", "--golden-file", str(path),
            "--golden-report", str(tmp_path / "report.json")]  # fmt: skip
    assert main([*argv, "--golden-check", "warn"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["golden"]["status"] == "mismatch"
    assert "GOLDEN OUTPUT MISMATCH" in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["golden"]["status"] == "mismatch" and report["golden_check"] == "warn"
    assert main([*argv, "--golden-check", "fail"]) == 8
    out, err = capsys.readouterr()
    assert out == "" and "GOLDEN OUTPUT MISMATCH" in err
    assert json.loads((tmp_path / "report.json").read_text())["golden_check"] == "fail"


# --- asking a server: the request and parse layer ---------------------------------------------------


class _Scorer(BaseHTTPRequestHandler):
    """Answers /v1/completions with vLLM's prompt_logprobs shape (None for the first prompt token, then a
    dict of token id -> {"logprob": ...} with the token scored and vLLM's best), or with ``status``."""

    status: ClassVar[int] = 200
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        if self.status != 200:
            reply, code = {"error": {"message": "nope"}}, self.status
        else:
            scored = [None] + [
                {str(t): {"logprob": -1.0}, "999": {"logprob": -0.75}} for t in body["prompt"][1:]
            ]
            reply, code = {"choices": [{"text": "x", "prompt_logprobs": scored}]}, 200
        data = json.dumps(reply).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def scorer(serve):
    handler = type("Scorer", (_Scorer,), {"seen": []})
    return handler, serve(handler)


def test_forced_gaps_sends_the_reference_tokens_and_reads_how_far_vllm_was_ahead(scorer):
    handler, url = scorer
    out = g.ChatOutput.model_validate(chat_output([5, 6]))
    assert g.forced_gaps(url, "m", out) == [0.25, 0.25]
    (sent,) = handler.seen
    assert sent["prompt"] == [1, 2, 3, 5, 6] and sent["prompt_logprobs"] == 1 and sent["temperature"] == 0


def test_forced_gaps_is_unknown_on_a_server_without_the_extension_but_a_crash_is_an_error(scorer):
    handler, url = scorer
    out = g.ChatOutput.model_validate(chat_output([5, 6]))
    handler.status = 400
    assert g.forced_gaps(url, "m", out) is None
    # What the gate once took for "cannot say": vLLM's CPU build answering 500 as its engine died.
    handler.status = 500
    with pytest.raises(urllib.error.HTTPError):
        g.forced_gaps(url, "m", out)
