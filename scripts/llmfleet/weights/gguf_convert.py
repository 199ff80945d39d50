"""Convert a GGUF file into a safetensors model directory that vLLM serves.

This module runs inside the vLLM virtual environment (it needs torch, transformers and gguf, which
the llmfleet CLI itself does not depend on), so it imports nothing from llmfleet and takes plain
arguments: ``python gguf_convert.py GGUF_FILE OUT_DIR --dtype bfloat16``.

transformers reads a GGUF and dequantizes it, but ``save_pretrained`` refuses a model that still
carries the GGUF quantization config. We drop that config, build a plain model from it, load the
dequantized weights and save safetensors plus the tokenizer (its chat template included).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def convert(gguf_file: Path, out_dir: Path, dtype_name: str) -> dict[str, object]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    src_dir, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=dtype)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings may show up as a missing lm_head; anything else means the conversion is wrong.
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return json.loads((out_dir / "config.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf_file", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    config = convert(args.gguf_file, args.out_dir, args.dtype)
    json.dump({"config": config}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
