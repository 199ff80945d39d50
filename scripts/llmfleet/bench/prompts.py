"""Prompts of an exact token count, generated with the served model's own tokenizer.

The tokenizer is read from the ``tokenizer.json`` in the served weights folder (Hugging Face
``tokenizers``; the ``transformers`` of vLLM's venv cannot be imported here). Prompts are random words,
each a single token with its leading space (``Ġword`` in a byte-level BPE vocabulary), so the count is
exact and the server's ``usage.prompt_tokens`` confirms it. Every prompt differs after the shared prefix,
so the server's prefix cache helps only where the profile asks for it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from llmfleet.bench.errors import BenchError

_WORD = re.compile(r"^\u0120[a-z]{3,12}$")  # Ġ marks a leading space in byte-level BPE vocabularies


@dataclass
class PromptMaker:
    """Builds prompts of exactly N tokens (as the tokenizer counts them with its special tokens)."""

    tokenizer: object
    words: list[str]

    @classmethod
    def from_dir(cls, weights_dir: Path) -> PromptMaker:
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - the bench extra is not installed
            raise BenchError("the 'tokenizers' package is missing: pip install -e '.[bench]'") from None
        path = Path(weights_dir) / "tokenizer.json"
        if not path.is_file():
            raise BenchError(
                f"no tokenizer.json in {weights_dir}: pass --tokenizer with the served weights folder"
            )
        tokenizer = Tokenizer.from_file(str(path))
        candidates = sorted(tok for tok in tokenizer.get_vocab() if _WORD.match(tok))
        words = [
            w[1:] for w in candidates if len(tokenizer.encode(" " + w[1:], add_special_tokens=False).ids) == 1
        ]
        if len(words) < 100:
            raise BenchError(
                f"{path}: found only {len(words)} single-token words; this tokenizer is not a byte-level BPE "
                "one, and exact-length prompts need one"
            )
        return cls(tokenizer=tokenizer, words=words)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)  # type: ignore[attr-defined]

    def _words(self, rng: random.Random, n: int) -> str:
        return "".join(" " + rng.choice(self.words) for _ in range(n))

    def prompts(
        self,
        n_prompts: int,
        tokens: int,
        shared_prefix_tokens: int,
        seed: int,
        prefix_seed: int | None = None,
    ) -> list[str]:
        """``n_prompts`` prompts of exactly ``tokens`` tokens, the first ``shared_prefix_tokens`` common.

        The prefix comes from ``prefix_seed`` (default ``seed``), so steps with different seeds can share it.
        """
        rng = random.Random(seed)
        base = self.count("")  # special tokens the tokenizer adds (BOS), usually 0 or 1
        if tokens <= base + shared_prefix_tokens:
            raise BenchError(
                f"cannot build a {tokens}-token prompt with a {shared_prefix_tokens}-token prefix"
            )
        prefix = self._words(
            random.Random(seed if prefix_seed is None else prefix_seed), shared_prefix_tokens
        )
        out = []
        for _ in range(n_prompts):
            text = prefix + self._words(rng, tokens - base - shared_prefix_tokens)
            # Each word is one token, so this holds unless the tokenizer merges across words; fix it if so.
            for _attempt in range(50):
                got = self.count(text)
                if got == tokens:
                    break
                if got < tokens:
                    text += self._words(rng, tokens - got)
                else:
                    text = " ".join(text.split(" ")[: -(got - tokens)])
            else:
                raise BenchError(f"could not build a prompt of exactly {tokens} tokens")
            if self.count(text) != tokens:
                raise BenchError(f"could not build a prompt of exactly {tokens} tokens")
            out.append(text)
        return out
