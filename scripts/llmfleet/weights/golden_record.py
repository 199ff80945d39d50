"""Record a golden output with the Hugging Face reference implementation (transformers on the CPU).

Like gguf_convert.py, this runs inside the vLLM virtual environment (it needs torch and transformers,
which the llmfleet CLI does not depend on), so it imports nothing from llmfleet and prints JSON:

    python golden_record.py chat MODEL_DIR --message "..." [--message ...] --max-tokens 16 [--dtype bfloat16]
    python golden_record.py embedding MODEL_DIR --input "..." [--input "..."]

Both print a JSON list, one result per prompt or input (one the model is loaded for).

Exit status 3 means the reference cannot run here (torch or transformers missing, a pooling this
recorder does not know); the caller records nothing and says why. Any other failure is an error.

chat: greedy decoding written out as an argmax over transformers' own forward pass, for exactly
``max_tokens`` steps. ``generate`` would stop at EOS (or, with ``min_new_tokens``, mask EOS and so
change the argmax); vLLM's ``temperature: 0`` with ``ignore_eos`` is plain argmax that runs past EOS,
and that is what the readiness gate asks vLLM for. Each step also records the gap between the best
and second-best log-probability: where it is tiny, a different kernel (vLLM's CPU path) may pick the
other token without anything being wrong, and the gate's rule needs to know that.

embedding: what sentence-transformers computes for the model, from its own files: the pooling its
1_Pooling/config.json names (mean, CLS, max or last token) over the transformer's last hidden state,
then L2 normalisation when modules.json lists a Normalize module.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

UNAVAILABLE = 3


class Unavailable(Exception):
    """The reference implementation cannot run this model here."""


def _imports():  # type: ignore[no-untyped-def]
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise Unavailable(f"the reference implementation needs torch and transformers: {exc}") from None
    return torch, transformers


def _reference(torch, transformers, dtype: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "implementation": "transformers",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": "cpu",
        "dtype": dtype,
    }


def _dtype_of(model_dir: Path, asked: str | None) -> str:
    if asked:
        return asked
    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(name).removeprefix("torch.")


def record_chat(
    model_dir: Path, messages_in: list[str], max_tokens: int, dtype: str | None
) -> list[dict[str, object]]:
    torch, transformers = _imports()
    dtype = _dtype_of(model_dir, dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    model.eval()
    reference = _reference(torch, transformers, dtype)
    return [_greedy(torch, tokenizer, model, m, max_tokens, reference) for m in messages_in]


def _greedy(torch, tokenizer, model, message: str, max_tokens: int, reference: dict[str, str]):  # type: ignore[no-untyped-def]
    messages = [{"role": "user", "content": message}]
    templated = bool(tokenizer.chat_template)
    if templated:
        # The demo's own prompt: the chat template, then tokens without adding specials twice.
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    else:
        prompt = message
        prompt_ids = list(tokenizer(prompt)["input_ids"])
    ids: list[int] = []
    margins: list[float] = []
    with torch.inference_mode():
        past = None
        step_input = torch.tensor([prompt_ids])
        for _ in range(max_tokens):
            out = model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            top = torch.topk(logprobs, 2)
            token = int(top.indices[0])
            ids.append(token)
            margins.append(round(float(top.values[0] - top.values[1]), 4))
            step_input = torch.tensor([[token]])
    return {
        "kind": "chat",
        "messages": messages,
        "chat_template": templated,
        "prompt": prompt,
        "prompt_token_ids": prompt_ids,
        "max_tokens": max_tokens,
        "token_ids": ids,
        # As vLLM returns it by default (special tokens skipped): for people, and servers without token ids.
        "text": tokenizer.decode(ids, skip_special_tokens=True),
        "margins": margins,
        "reference": reference,
    }


_POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last",
}


def _pooling(model_dir: Path) -> tuple[str, bool]:
    """(pooling, normalize) as the model's sentence-transformers files say."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        raise Unavailable("no modules.json: not a sentence-transformers model, its pooling is unknown")
    modules = json.loads(modules_file.read_text())
    types = [str(m.get("type", "")) for m in modules]
    pooling_module = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling_module is None:
        raise Unavailable(f"modules.json lists no Pooling module ({types})")
    config = json.loads((model_dir / pooling_module["path"] / "config.json").read_text())
    chosen = [mode for key, mode in _POOLING_MODES.items() if config.get(key)]
    others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _POOLING_MODES]
    if len(chosen) != 1 or others:
        raise Unavailable(f"pooling {chosen + others} is not one this recorder computes")
    known = {".Transformer", ".Pooling", ".Normalize"}
    extra = [t for t in types if not any(t.endswith(k) for k in known)]
    if extra:
        raise Unavailable(f"modules.json has modules this recorder does not compute: {extra}")
    return chosen[0], any(t.endswith(".Normalize") for t in types)


def record_embedding(model_dir: Path, texts: list[str], dtype: str | None) -> list[dict[str, object]]:
    torch, transformers = _imports()
    pooling, normalize = _pooling(model_dir)
    dtype = _dtype_of(model_dir, dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModel.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    model.eval()
    reference = _reference(torch, transformers, dtype)
    return [_embed(torch, tokenizer, model, t, pooling, normalize, reference) for t in texts]


def _embed(torch, tokenizer, model, text: str, pooling: str, normalize: bool, reference: dict[str, str]):  # type: ignore[no-untyped-def]
    batch = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state[0].float()
    mask = batch["attention_mask"][0].bool()
    tokens = hidden[mask]
    if pooling == "mean":
        vector = tokens.mean(dim=0)
    elif pooling == "cls":
        vector = tokens[0]
    elif pooling == "max":
        vector = tokens.max(dim=0).values
    else:
        vector = tokens[-1]
    if normalize:
        vector = torch.nn.functional.normalize(vector, p=2, dim=0)
    return {
        "kind": "embedding",
        "input": text,
        "input_token_ids": [int(t) for t in batch["input_ids"][0]],
        "pooling": pooling,
        "normalize": normalize,
        "embedding": [round(float(x), 7) for x in vector],
        "reference": reference,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    chat = sub.add_parser("chat")
    chat.add_argument("model_dir", type=Path)
    chat.add_argument("--message", action="append", required=True, help="repeat for several prompts")
    chat.add_argument("--max-tokens", type=int, default=16)
    chat.add_argument("--dtype", default=None, help="default: the dtype config.json names")
    emb = sub.add_parser("embedding")
    emb.add_argument("model_dir", type=Path)
    emb.add_argument("--input", action="append", required=True, help="repeat for several inputs")
    emb.add_argument("--dtype", default=None, help="default: the dtype config.json names")
    args = parser.parse_args(argv)
    try:
        if args.kind == "chat":
            result = record_chat(args.model_dir, args.message, args.max_tokens, args.dtype)
        else:
            result = record_embedding(args.model_dir, args.input, args.dtype)
    except Unavailable as exc:
        print(str(exc), file=sys.stderr)
        return UNAVAILABLE
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
