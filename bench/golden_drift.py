"""How far does vLLM's greedy output follow the Hugging Face reference on this machine?

The measurement behind the golden check's rule (llmfleet.weights.golden.Rule): for a set of fixed prompts the
reference (transformers, CPU, the served dtype) and a running vLLM instance each decode greedily, and
the report gives, per prompt, the common prefix of the two token sequences and the reference's
top-two margin where they part. For an embedding model it gives the cosine of the two vectors.

    .venv/bin/python bench/golden_drift.py --url http://127.0.0.1:8100 --model smollm2-135m-instruct \\
        --weights /var/lib/llmfleet/serving/smollm2-135m-instruct/b179c9523d0e --tokens 32
    .venv/bin/python bench/golden_drift.py --task embedding --url http://127.0.0.1:8101 \\
        --model all-minilm-l6-v2 --weights /var/lib/llmfleet/serving/all-minilm-l6-v2/<rev> --dtype float32
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from llmfleet.weights.golden import (
    CHAT_CANDIDATES,
    EMBEDDING_INPUT,
    RECORDER,
    ChatOutput,
    EmbeddingOutput,
    Golden,
    Rule,
    common_prefix,
    compare,
    cosine,
    forced_gaps,
    served_chat,
    served_embedding,
)

# The gate's own candidates first, then other everyday prompts.
MESSAGES = [
    *CHAT_CANDIDATES,
    "Write the numbers from one to ten in words, separated by commas.",
    "Hello! Who are you?",
    "Say hello.",
    "Write a haiku about the sea.",
    "Explain what a CPU does in one sentence.",
    "List three primary colors.",
    "Translate 'good morning' into French.",
    "Give me a synonym for 'happy'.",
    "Write a short story about a robot.",
    "Describe the color blue to someone who cannot see.",
    "Spell the word 'necessary' letter by letter.",
    "Write a Python function that adds two numbers.",
    "Why is the sky blue?",
    "Recommend a book for a long train journey.",
]
INPUTS = [
    EMBEDDING_INPUT,
    "Hello",
    "a cat",
    "A man is playing a guitar on the street.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "How do I reset my password?",
    "Les chats dorment beaucoup.",
    "1 2 3 4 5 6 7 8 9 10",
]


def reference(python: str, weights: Path, task: str, tokens: int, dtype: str) -> list[dict]:
    if task == "embedding":
        args = ["embedding", str(weights), "--dtype", dtype]
        for text in INPUTS:
            args += ["--input", text]
    else:
        args = ["chat", str(weights), "--max-tokens", str(tokens), "--dtype", dtype]
        for message in MESSAGES:
            args += ["--message", message]
    proc = subprocess.run([python, str(RECORDER), *args], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the reference failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the instance, e.g. http://127.0.0.1:8100")
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", type=Path, required=True, help="the staged copy the instance serves")
    parser.add_argument("--task", choices=["chat", "embedding"], default="chat")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--python", default="/opt/llmfleet/vllm-venv/bin/python", help="python with torch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    outputs = reference(args.python, args.weights, args.task, args.tokens, args.dtype)
    rule = Rule()
    rows = []
    for raw in outputs:
        if args.task == "embedding":
            out = EmbeddingOutput.model_validate(raw)
            got = served_embedding(args.url, args.model, out).embedding or []
            rows.append({"input": out.input, "cosine": round(cosine(out.embedding, got), 7)})
            continue
        out = ChatOutput.model_validate(raw)
        served = served_chat(args.url, args.model, out)
        served.forced_gaps = forced_gaps(args.url, args.model, out)
        got = served.token_ids or []
        prefix = common_prefix(out.token_ids, got)
        golden = Golden(model=args.model, revision="-", weights_sha256="-", recorded_at="-", output=out)
        verdict = compare(golden, served, rule)
        rows.append({
            "message": out.messages[0]["content"],
            "common_prefix": prefix,
            "of": len(out.token_ids),
            "margin_at_split": out.margins[prefix] if prefix < len(out.margins) else None,
            "min_margin": min(out.margins),
            "max_forced_gap": max(served.forced_gaps or [float("nan")]),
            "same_prompt_ids": served.prompt_token_ids == out.prompt_token_ids,
            "rule": verdict.status,
            "reference": out.text[:60],
            "served": (served.text or "")[:60],
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.task == "embedding":
        for row in rows:
            print(f"{row['cosine']:.7f}  {row['input']}")
        print(f"min cosine {min(r['cosine'] for r in rows):.7f} over {len(rows)} inputs")
        return 0
    for row in rows:
        split = "-" if row["margin_at_split"] is None else f"{row['margin_at_split']:.3f}"
        print(f"{row['common_prefix']:>3}/{row['of']}  split margin {split:>6}  min {row['min_margin']:.3f}"
              f"  forced gap {row['max_forced_gap']:.3f}  {row['rule']:8}  {row['message']}")  # fmt: skip
    prefixes = [r["common_prefix"] for r in rows]
    full = sum(1 for r in rows if r["common_prefix"] == r["of"])
    splits = [r["margin_at_split"] for r in rows if r["margin_at_split"] is not None]
    print(f"prompt token ids equal in {sum(r['same_prompt_ids'] for r in rows)} of {len(rows)}; largest "
          f"reference margin where the two parted: {max(splits, default=None)}")  # fmt: skip
    gap = max(r["max_forced_gap"] for r in rows)
    passes = sum(r["rule"] == "match" for r in rows)
    print(f"{len(rows)} prompts: common prefix min {min(prefixes)}, median {statistics.median(prefixes)}, "
          f"all {args.tokens} equal in {full}; largest forced gap {gap:.3f}; "
          f"the rule passes {passes}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
