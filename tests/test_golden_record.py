"""The golden recorder for real (transformers, torch) on tiny randomly initialised models.

It needs a python with torch and transformers: the vLLM venv that `make deploy` installs
(LLMFLEET_TEST_TORCH_PYTHON to point elsewhere). Without one the test is skipped, and the end-to-end
deploy records both catalog models' golden outputs instead. About 20 s: each run imports torch.

What is checked against an independent computation in the same python: the recorder's greedy loop
(one token at a time, with the KV cache) gives the same tokens and margins as re-running the whole
sequence each step; its embedding is the masked mean of the last hidden state, L2-normalised.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from llmfleet.weights.golden import RECORDER, ChatOutput, EmbeddingOutput

TORCH_PYTHON = os.environ.get("LLMFLEET_TEST_TORCH_PYTHON", "/opt/llmfleet/vllm-venv/bin/python")
pytestmark = pytest.mark.skipif(
    not Path(TORCH_PYTHON).exists(),
    reason=f"no python with torch at {TORCH_PYTHON} (make deploy installs it)",
)

BUILD = r"""
import json, sys
from pathlib import Path
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = Path(sys.argv[1])
words = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", ":", "a", "fox", "?"]
words += [f"w{i}" for i in range(60)]
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
torch.manual_seed(0)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                               eos_token="</s>")
fast.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                      "{% if add_generation_prompt %}assistant : {% endif %}")
cfg = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out / "chat")
fast.save_pretrained(out / "chat")
emb = out / "emb"
BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)).save_pretrained(emb)
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>").save_pretrained(emb)
(emb / "1_Pooling").mkdir()
(emb / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
(emb / "modules.json").write_text(json.dumps([
    {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]))
"""

# Independent of the recorder: the whole sequence through the model at every step, no KV cache.
CHECK = r"""
import json, sys
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

chat, emb = json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1] + "/chat", dtype=torch.bfloat16)
seq, ids, margins = list(chat["prompt_token_ids"]), [], []
with torch.inference_mode():
    for _ in range(chat["max_tokens"]):
        logprobs = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1].float(), -1)
        top = torch.topk(logprobs, 2)
        ids.append(int(top.indices[0])); margins.append(float(top.values[0] - top.values[1]))
        seq.append(ids[-1])
bert = AutoModel.from_pretrained(sys.argv[1] + "/emb", dtype=torch.float32)
batch = AutoTokenizer.from_pretrained(sys.argv[1] + "/emb")([emb["input"]], return_tensors="pt")
with torch.inference_mode():
    hidden = bert(**batch).last_hidden_state[0]
mask = batch["attention_mask"][0].unsqueeze(-1).float()
vector = torch.nn.functional.normalize((hidden * mask).sum(0) / mask.sum(), dim=0)
print(json.dumps({"ids": ids, "margins": margins, "embedding": vector.tolist()}))
"""


def run(*argv: str) -> str:
    proc = subprocess.run([TORCH_PYTHON, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    (out / "build.py").write_text(BUILD)
    run(str(out / "build.py"), str(out))
    return out


def test_the_recorder_decodes_greedily_and_pools_like_sentence_transformers(tiny):
    argv = ["chat", str(tiny / "chat"), "--message", "a fox ?", "--message", "w1 w2", "--max-tokens", "6"]
    chats = [
        ChatOutput.model_validate(o) for o in json.loads(run(str(RECORDER), *argv, "--dtype", "bfloat16"))
    ]
    assert len(chats) == 2
    chat = chats[0]
    assert chat.chat_template and chat.prompt == "user : a fox ? assistant : "
    assert len(chat.token_ids) == 6 and len(chat.margins) == 6
    assert chat.reference.implementation == "transformers" and chat.reference.dtype == "bfloat16"
    argv = ["embedding", str(tiny / "emb"), "--input", "a fox w3", "--dtype", "float32"]
    (emb,) = [EmbeddingOutput.model_validate(o) for o in json.loads(run(str(RECORDER), *argv))]
    assert (emb.pooling, emb.normalize) == ("mean", True) and len(emb.embedding) == 16
    check = json.loads(run("-c", CHECK, str(tiny), chat.model_dump_json(), emb.model_dump_json()))
    assert chat.token_ids == check["ids"], "the KV-cached greedy loop equals full re-computation"
    assert chat.margins == pytest.approx(check["margins"], abs=1e-3)
    assert emb.embedding == pytest.approx(check["embedding"], abs=1e-5)
    assert sum(x * x for x in emb.embedding) == pytest.approx(1.0, abs=1e-5)
