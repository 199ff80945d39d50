"""Prompts of an exact token count, built with a byte-level BPE tokenizer trained here (no model needed)."""

from __future__ import annotations

import random

import pytest

from llmfleet.bench.errors import BenchError
from llmfleet.bench.prompts import PromptMaker

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(1)
    words = sorted(
        {
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
            for _ in range(400)
        }
    )
    corpus = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"]))
    out = tmp_path_factory.mktemp("tok")
    tok.save(str(out / "tokenizer.json"))
    return out


def test_prompts_have_exactly_the_asked_token_count(tokenizer_dir):
    maker = PromptMaker.from_dir(tokenizer_dir)
    for tokens in (1, 7, 128, 1000):
        prompts = maker.prompts(3, tokens, 0, seed=tokens)
        assert [maker.count(p) for p in prompts] == [tokens] * 3
        assert len(set(prompts)) == 3


def test_shared_prefix_is_common_and_the_rest_differs(tokenizer_dir):
    maker = PromptMaker.from_dir(tokenizer_dir)
    a = maker.prompts(4, 64, 40, seed=1, prefix_seed=9)
    b = maker.prompts(4, 64, 40, seed=2, prefix_seed=9)
    prefix = " ".join(a[0].split(" ")[:41])
    assert all(p.startswith(prefix) for p in a + b)
    assert len(set(a + b)) == 8
    assert all(maker.count(p) == 64 for p in a + b)


def test_same_seed_same_prompts(tokenizer_dir):
    maker = PromptMaker.from_dir(tokenizer_dir)
    assert maker.prompts(2, 50, 0, seed=5) == maker.prompts(2, 50, 0, seed=5)


def test_a_folder_without_tokenizer_json_is_named(tmp_path):
    with pytest.raises(BenchError, match=r"no tokenizer\.json"):
        PromptMaker.from_dir(tmp_path)


def test_a_prefix_as_long_as_the_prompt_is_refused(tokenizer_dir):
    with pytest.raises(BenchError, match="prefix"):
        PromptMaker.from_dir(tokenizer_dir).prompts(1, 10, 10, seed=0)
