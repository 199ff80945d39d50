"""Golden outputs: does the deployed model behave like its reference implementation (seed 004)?

At import, ``record`` runs the Hugging Face reference implementation (transformers, on the CPU, in
the vLLM venv: golden_record.py) on the store copy once: a greedy completion of a fixed chat prompt
for a chat model, the sentence-transformers embedding of a fixed input for an embedding model. The
result is kept beside the revision in the store as ``golden.json`` and staged with the weights.

After deploy, the readiness gate asks the instance the same question (``served_chat`` /
``served_embedding``) and ``compare`` judges the answer with a rule measured on this project's
machines (see ``Rule``). A mismatch is a ``GoldenMismatchError`` naming the prompt and both outputs.

golden.json is NOT in the revision's manifest: it is derived from the weights, not part of them, and
kept apart so a revision published before golden outputs existed (revisions are immutable) can still
get one. What binds it to the weights is ``weights_sha256``, a digest of the manifest's file hashes:
a golden.json recorded from other weights is refused, not compared.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from llmfleet.errors import GoldenMismatchError, WeightsError

RECORDER = Path(__file__).with_name("golden_record.py")
UNAVAILABLE = 3  # golden_record.py's exit status when the reference cannot run here

# The fixed prompts and input. Short questions with one plain answer: the reference is most often
# sure of every token of those. ``record`` keeps the candidate whose completion the reference is most
# decided about (the largest smallest top-two margin), so that it has as few near-ties as can be.
CHAT_CANDIDATES = (
    "What is the boiling point of water in Celsius?",
    "What day comes after Monday?",
    "What is the capital of France?",
    "Count from one to ten.",
    "Name the planets of the solar system.",
    "What is 12 times 12?",
)
EMBEDDING_INPUT = "The quick brown fox jumps over the lazy dog."
# 32, not fewer: weights with 5% noise still gave the first 16 greedy tokens of the chosen prompt
# unchanged here, and parted (far from any tie) at token 21. 32 tokens cost vLLM about a second on a CPU.
CHAT_TOKENS = 32


class Reference(BaseModel):
    implementation: str
    transformers: str
    torch: str
    device: str
    dtype: str


class ChatOutput(BaseModel):
    kind: Literal["chat"]
    messages: list[dict[str, str]]
    chat_template: bool  # the prompt is the model's chat template applied to ``messages``
    prompt: str
    prompt_token_ids: list[int]
    max_tokens: int
    token_ids: list[int]
    text: str
    # Per step, the reference's log-probability gap between its best and second-best token.
    margins: list[float]
    reference: Reference


class EmbeddingOutput(BaseModel):
    kind: Literal["embedding"]
    input: str
    input_token_ids: list[int]
    pooling: str
    normalize: bool
    embedding: list[float]
    reference: Reference


class Golden(BaseModel):
    schema_version: Literal[1] = 1
    model: str
    revision: str
    weights_sha256: str
    recorded_at: str
    candidates: int = 1  # how many fixed prompts the chat prompt was picked from
    output: Annotated[ChatOutput | EmbeddingOutput, Field(discriminator="kind")]


class Rule(BaseModel):
    """How close vLLM's answer must be; the defaults are measured (README, "Golden outputs").

    chat: the rendered prompt's token ids must be equal (same chat template, same tokenizer), and the
    greedy token ids too. The two may part where the choice was a near-tie: bf16 kernels that differ
    only in summation order may pick either of two tokens less than ``tie_margin`` nats apart, and
    after that the continuations owe each other nothing. So when they part, vLLM scores the
    reference's own tokens (teacher forcing, ``prompt_logprobs``), and at every step the reference's
    token must be within ``tie_margin`` of vLLM's best. That is checked along all the tokens, so a
    reference (or a server) that is wrong but torn at the first token does not pass by the tie.
    Measured here (bench/golden_drift.py; SmolLM2-135M, bf16, vLLM CPU 0.32 against transformers 5.19,
    20 prompts of 32 tokens): 15 parted, always at a reference margin of 0.375 nats or less (bf16
    logits come in steps of 0.125 there); scored along the reference's tokens, vLLM's best was at most
    0.25 nats ahead. With noise added to the reference's weights (2%, 5%, 20% of each matrix's
    standard deviation) the rule failed 10, 18 and 20 of the 20 prompts.
    embedding: the cosine similarity of the two vectors is at least ``min_cosine``.
    """

    tie_margin: float = 0.5
    min_cosine: float = 0.999


class Served(BaseModel):
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None
    text: str | None = None
    # Per reference token: how many nats vLLM's best choice led it by, given the reference's history.
    forced_gaps: list[float] | None = None
    embedding: list[float] | None = None


class Verdict(BaseModel):
    status: Literal["match", "mismatch", "skipped"]
    kind: str | None = None
    detail: str
    common_prefix: int | None = None
    compared: int | None = None
    cosine: float | None = None
    golden: dict[str, Any] | None = None
    served: dict[str, Any] | None = None
    message: str | None = None  # on a mismatch: prompt, both outputs, the rule; for people

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"


def weights_digest(manifest: dict[str, Any]) -> str:
    """A digest of the weights a manifest describes: its files' paths and sha256, nothing else."""
    files = manifest.get("files") or {}
    canonical = json.dumps({rel: meta["sha256"] for rel, meta in sorted(files.items())}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load(path: Path) -> Golden | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return load_bytes(data, str(path))


def load_bytes(data: bytes, where: str) -> Golden:
    try:
        return Golden.model_validate_json(data)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{where} is not a valid golden output ({first}); record it again") from None


def bind(golden: Golden, manifest: dict[str, Any]) -> Golden:
    """The golden output, tied to the weights ``manifest`` lists."""
    return golden.model_copy(update={"weights_sha256": weights_digest(manifest)})


# --- recording ------------------------------------------------------------------------------------


def record(
    model_dir: Path,
    model: str,
    revision: str,
    manifest: dict[str, Any] | None,
    task: str,
    dtype: str,
    python: str,
    *,
    timeout_s: float = 900.0,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> tuple[Golden | None, str]:
    """Run the reference on ``model_dir``; (golden, why) with golden None when it cannot run here.

    Without ``manifest`` (the weights are not published yet) the result is tied to them later (``bind``).
    """
    if task == "embedding":
        args = ["embedding", str(model_dir), "--input", EMBEDDING_INPUT, "--dtype", dtype]
    else:
        args = ["chat", str(model_dir), "--max-tokens", str(CHAT_TOKENS), "--dtype", dtype]
        for message in CHAT_CANDIDATES:
            args += ["--message", message]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    try:
        proc = run([python, str(RECORDER), *args], capture_output=True, text=True, check=False,
                   timeout=timeout_s, env=env)  # fmt: skip
    except FileNotFoundError:
        return None, f"no python at {python} to run the reference implementation"
    except subprocess.TimeoutExpired:
        raise WeightsError(f"recording the golden output of {model} took over {timeout_s:.0f} s") from None
    if proc.returncode == UNAVAILABLE:
        return None, proc.stderr.strip()[-500:]
    if proc.returncode != 0:
        raise WeightsError(
            f"the reference implementation failed on {model} {revision} ({python} {RECORDER.name}): "
            f"{proc.stderr.strip()[-1500:]}"
        )
    try:
        outputs = [_OUTPUT.validate_python(raw) for raw in json.loads(proc.stdout)]
    except ValueError as exc:
        raise WeightsError(
            f"{RECORDER.name} printed no golden output ({exc}): {proc.stdout[-300:]}"
        ) from None
    if not outputs:
        raise WeightsError(f"{RECORDER.name} printed no golden output")
    golden = Golden(
        model=model,
        revision=revision,
        weights_sha256=weights_digest(manifest) if manifest is not None else "",
        recorded_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        candidates=len(outputs),
        output=most_decided(outputs),
    )
    return golden, "recorded with the reference implementation"


def most_decided(outputs: list[ChatOutput | EmbeddingOutput]) -> ChatOutput | EmbeddingOutput:
    """The candidate whose smallest top-two margin is largest (the first of equals)."""
    best = outputs[0]
    for out in outputs[1:]:
        chat = isinstance(out, ChatOutput) and isinstance(best, ChatOutput)
        if chat and min(out.margins, default=0.0) > min(best.margins, default=0.0):  # type: ignore[union-attr]
            best = out
    return best


_OUTPUT: TypeAdapter[ChatOutput | EmbeddingOutput] = TypeAdapter(
    Annotated[ChatOutput | EmbeddingOutput, Field(discriminator="kind")]
)


def to_bytes(golden: Golden) -> bytes:
    return (golden.model_dump_json(indent=2) + "\n").encode()


# --- asking the instance --------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        data = json.load(resp)
    if not isinstance(data, dict):
        raise ValueError(f"{url} answered {str(data)[:200]}")
    return data


def served_chat(base_url: str, model: str, output: ChatOutput, timeout: float = 120.0) -> Served:
    """The same greedy completion from vLLM, the way a client asks: the chat endpoint, so that vLLM
    renders the prompt with its own chat template and tokenizer; argmax, and on past EOS like the
    reference. ``return_token_ids`` (a vLLM extension) gives both sides' token ids."""
    common = {"model": model, "max_tokens": output.max_tokens, "temperature": 0, "ignore_eos": True,
              "return_token_ids": True}  # fmt: skip
    if output.chat_template:
        done = _post(f"{base_url}/v1/chat/completions", {**common, "messages": output.messages}, timeout)
        choice = done["choices"][0]
        text = (choice.get("message") or {}).get("content")
    else:
        done = _post(f"{base_url}/v1/completions", {**common, "prompt": output.prompt}, timeout)
        choice = done["choices"][0]
        text = choice.get("text")
    ids, prompt_ids = choice.get("token_ids"), done.get("prompt_token_ids", choice.get("prompt_token_ids"))
    return Served(
        prompt_token_ids=[int(t) for t in prompt_ids] if isinstance(prompt_ids, list) else None,
        token_ids=[int(t) for t in ids] if isinstance(ids, list) else None,
        text=text,
    )


def forced_gaps(base_url: str, model: str, output: ChatOutput, timeout: float = 120.0) -> list[float] | None:
    """vLLM scores the reference's tokens after the reference's prompt: per token, how far vLLM's own
    best choice was ahead of it (0 where it is vLLM's best too). None when the server cannot say."""
    prompt = output.prompt_token_ids + output.token_ids
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1}
    try:
        scored = _post(f"{base_url}/v1/completions", body, timeout)["choices"][0].get("prompt_logprobs")
    except urllib.error.HTTPError as exc:
        # A server without vLLM's prompt_logprobs extension refuses the field; one that fails on it (a
        # 500: vLLM's CPU build died compiling the logprobs kernel on a host without g++) is broken, not
        # merely unable to say, and must fail the gate.
        if exc.code in (400, 404, 422):
            return None
        raise
    if not isinstance(scored, list) or len(scored) != len(prompt):
        return None
    gaps = []
    for i, token in enumerate(output.token_ids):
        entry = scored[len(output.prompt_token_ids) + i] or {}
        mine = entry.get(str(token))
        if mine is None:
            return None
        best = max(float(v["logprob"]) for v in entry.values())
        gaps.append(round(best - float(mine["logprob"]), 4))
    return gaps


def served_embedding(base_url: str, model: str, output: EmbeddingOutput, timeout: float = 120.0) -> Served:
    done = _post(f"{base_url}/v1/embeddings", {"model": model, "input": output.input}, timeout)
    return Served(embedding=[float(x) for x in done["data"][0]["embedding"]])


# --- judging --------------------------------------------------------------------------------------


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("nan")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else float("nan")


def compare(golden: Golden, served: Served, rule: Rule) -> Verdict:
    out = golden.output
    if isinstance(out, EmbeddingOutput):
        return _compare_embedding(out, served, rule)
    return _compare_chat(out, served, rule)


def _compare_chat(out: ChatOutput, served: Served, rule: Rule) -> Verdict:
    want = {"token_ids": out.token_ids, "text": out.text}
    got = {"token_ids": served.token_ids, "text": served.text}
    if served.prompt_token_ids is not None and served.prompt_token_ids != out.prompt_token_ids:
        at = common_prefix(out.prompt_token_ids, served.prompt_token_ids)
        return Verdict(
            status="mismatch", kind="chat", golden={**want, "prompt_token_ids": out.prompt_token_ids},
            served={**got, "prompt_token_ids": served.prompt_token_ids},
            detail=(f"vLLM renders the prompt to other tokens than the reference (they part at prompt token "
                    f"{at}): the chat template or the tokenizer differs"),
        )  # fmt: skip
    if served.token_ids is None:
        # A server that does not return token ids: the text, which must then match in full.
        same = (served.text or "") == out.text
        return Verdict(
            status="match" if same else "mismatch", kind="chat", golden=want, served=got,
            detail=("the served text equals the reference's" if same else
                    "the served text differs from the reference's (this server returns no token ids, "
                    "so the text is compared whole)"),
        )  # fmt: skip
    total = len(out.token_ids)
    prefix = common_prefix(out.token_ids, served.token_ids)
    base = dict(kind="chat", common_prefix=prefix, compared=total, golden=want, served=got)
    if prefix == total and len(served.token_ids) == total:
        return Verdict(status="match", detail=f"all {total} greedy tokens equal the reference's", **base)
    if prefix == len(served.token_ids) < total:
        detail = f"vLLM returned {prefix} tokens where {total} were asked for (those {prefix} are equal)"
        return Verdict(status="mismatch", detail=detail, **base)
    parted = f"the first {prefix} of {total} greedy tokens equal the reference's"
    if served.forced_gaps is not None and len(served.forced_gaps) == total:
        gaps = served.forced_gaps
        worst = max(range(total), key=lambda i: gaps[i])
        base["served"] = {**got, "forced_gaps": gaps}
        if gaps[worst] < rule.tie_margin:
            return Verdict(
                status="match",
                detail=(
                    f"{parted}; scored along the reference's tokens, vLLM's own best choice was never more "
                    f"than {gaps[worst]:.3f} nats ahead (under {rule.tie_margin}): the paths parted at a "
                    "near-tie"
                ),
                **base,
            )
        first = next(i for i, gap in enumerate(gaps) if gap >= rule.tie_margin)
        return Verdict(
            status="mismatch",
            detail=(
                f"{parted}; scored along the reference's tokens, vLLM's best choice at token {first} was "
                f"{gaps[first]:.3f} nats ahead of the reference's (a near-tie is under {rule.tie_margin}; "
                f"the most: {gaps[worst]:.3f} at token {worst})"
            ),
            **base,
        )
    # A server that cannot score the reference's tokens: only the reference's own margin where they part.
    margin = out.margins[prefix] if prefix < len(out.margins) else None
    if margin is not None and margin < rule.tie_margin:
        return Verdict(
            status="match",
            detail=(
                f"{parted}; at token {prefix} the reference was torn between its top two ({margin:.3f} "
                f"nats apart, under {rule.tie_margin}), where bf16 kernels may pick either (this server "
                "cannot score the reference's tokens, so nothing after that is checked)"
            ),
            **base,
        )
    why = f"its top choice there led by {margin:.3f} nats" if margin is not None else "no margin recorded"
    return Verdict(
        status="mismatch",
        detail=(
            f"greedy tokens differ from the reference's at token {prefix} of {total}, where the reference "
            f"was sure ({why}; a split is forgiven under {rule.tie_margin})"
        ),
        **base,
    )


def _compare_embedding(out: EmbeddingOutput, served: Served, rule: Rule) -> Verdict:
    got = served.embedding or []
    cos = cosine(out.embedding, got)
    shown = {"embedding[:8]": [round(x, 5) for x in got[:8]], "dimensions": len(got)}
    want = {"embedding[:8]": [round(x, 5) for x in out.embedding[:8]], "dimensions": len(out.embedding)}
    base = dict(
        kind="embedding", cosine=None if math.isnan(cos) else round(cos, 7), golden=want, served=shown
    )
    if len(got) != len(out.embedding):
        detail = f"the served vector has {len(got)} dimensions, the reference's {len(out.embedding)}"
        return Verdict(status="mismatch", detail=detail, **base)
    if cos >= rule.min_cosine:
        return Verdict(status="match", detail=f"cosine {cos:.6f} >= {rule.min_cosine}", **base)
    return Verdict(status="mismatch", detail=f"cosine {cos:.6f} < {rule.min_cosine}", **base)


Mode = Literal["fail", "warn", "off"]


def check(
    golden_file: Path,
    base_url: str,
    model: str,
    mode: Mode,
    rule: Rule | None = None,
    ask: Callable[[str, str, Golden], Served] | None = None,
) -> Verdict:
    """The gate's golden step: ask the instance what golden.json asked the reference, and judge.

    No golden.json (the reference could not run at import) is ``skipped``, never a failure: there is
    nothing to compare with. A golden.json recorded from other weights than the manifest beside it is a
    mismatch. A mismatch carries ``message``, the loud text; ``enforce`` decides what it does.
    """
    rule = rule or Rule()
    if mode == "off":
        return Verdict(status="skipped", detail="the golden check is off")
    golden = load(golden_file)
    if golden is None:
        return Verdict(status="skipped", detail=f"no {golden_file}: no golden output was recorded")
    from llmfleet.weights.manifest import MANIFEST, read_manifest

    manifest_file = golden_file.with_name(MANIFEST)
    try:
        manifest = read_manifest(golden_file.parent)
    except (OSError, WeightsError):
        manifest = None
    if manifest is None or weights_digest(manifest) != golden.weights_sha256:
        verdict = Verdict(
            status="mismatch", kind=golden.output.kind,
            detail=f"{golden_file} was recorded from other weights than {manifest_file} lists",
        )  # fmt: skip
    else:
        try:
            verdict = compare(golden, (ask or _ask)(base_url, model, golden), rule)
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            verdict = Verdict(
                status="mismatch", kind=golden.output.kind,
                detail=f"the instance did not answer the golden request: {type(exc).__name__}: {exc}",
            )  # fmt: skip
    if verdict.status == "mismatch":
        verdict.message = loud(verdict, golden, base_url, model)
    return verdict


def enforce(verdict: Verdict, mode: Mode) -> None:
    """``fail``: a mismatch stops the gate (GoldenMismatchError). ``warn``: the caller shows it."""
    if verdict.status == "mismatch" and mode == "fail":
        raise GoldenMismatchError(verdict.message or verdict.detail)


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The gate's verdict, kept for people and tests (the gate's own output is not shown on success)."""
    from llmfleet.weights.manifest import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    checked = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = json.dumps({**report, "checked_at": checked}, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode())


def _ask(base_url: str, model: str, golden: Golden) -> Served:
    out = golden.output
    if isinstance(out, EmbeddingOutput):
        return served_embedding(base_url, model, out)
    served = served_chat(base_url, model, out)
    if served.token_ids is not None and served.token_ids != out.token_ids:
        served.forced_gaps = forced_gaps(base_url, model, out)
    return served


def loud(verdict: Verdict, golden: Golden, base_url: str, model: str) -> str:
    """The message a mismatch prints: what was asked, both answers, the rule, and what to look at."""
    out = golden.output
    asked = out.prompt if isinstance(out, ChatOutput) else out.input
    ref = out.reference
    return "\n".join(
        [
            f"GOLDEN OUTPUT MISMATCH: {model} at {base_url} does not behave like its reference "
            "implementation.",
            f"  {verdict.detail}",
            f"  prompt/input: {asked!r}",
            f"  reference ({ref.implementation} {ref.transformers}, torch {ref.torch}, {ref.device}, "
            f"{ref.dtype}, recorded {golden.recorded_at}): {json.dumps(verdict.golden)}",
            f"  served: {json.dumps(verdict.served)}",
            "  Check the weights (llmfleet weights verify), the dtype and the chat template vLLM was given.",
        ]
    )
