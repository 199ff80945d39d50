"""Seed 002's rule: output-changing vLLM arguments are fixed per model; a deploy that overrides one is
refused with the reason, while placement and speed arguments pass through."""

from __future__ import annotations

import pytest

from llmfleet.catalog.models import FIXED_ARGS, TUNABLE_ARGS, arg_flag, fixed_args_in
from llmfleet.deploy.plan import DeploymentSettings, plan_model
from llmfleet.errors import PlanError

MODEL = "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--dtype", "float16"], "--dtype"),
        (["--quantization", "fp8"], "--quantization"),
        (["--kv-cache-dtype", "fp8"], "--kv-cache-dtype"),
        (["--max-model-len=4096"], "--max-model-len"),
        (["--max_model_len", "4096"], "--max-model-len"),  # vLLM accepts underscores too
        (["--speculative-config", '{"method": "ngram"}'], "--speculative-config"),
        (["--chat-template", "/tmp/t.jinja"], "--chat-template"),
        (["--max-num-seqs", "8", "-q", "awq"], "-q"),
    ],
)
def test_a_deploy_overriding_a_fixed_argument_is_refused_with_the_reason(catalog, cpu_host, extra, flag):
    settings = DeploymentSettings(profile="cpu", extra_args=extra)
    with pytest.raises(PlanError) as err:
        plan_model(MODEL, catalog.get(MODEL), cpu_host, settings)
    message = str(err.value)
    assert f"{flag} sets {FIXED_ARGS[flag]}" in message
    assert "deployment_plan_extra_args" in message and "catalog/models.yml" in message


def test_tunable_arguments_pass_through_to_vllm(catalog, cpu_host):
    extra = ["--max-num-batched-tokens", "512", "--enable-prefix-caching"]
    plan = plan_model(
        MODEL, catalog.get(MODEL), cpu_host, DeploymentSettings(profile="cpu", extra_args=extra)
    )
    assert plan.instances[0].argv[-3:] == extra


def test_values_are_not_mistaken_for_options():
    assert arg_flag("-1") is None and arg_flag("0.5") is None and arg_flag("fp8") is None
    assert fixed_args_in(["--max-num-seqs", "-1"]) == []
    assert arg_flag("--kv_cache_dtype=fp8") == "--kv-cache-dtype"


def test_the_two_lists_do_not_overlap():
    assert not set(FIXED_ARGS) & TUNABLE_ARGS
    assert {
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--max-num-seqs",
        "--max-num-batched-tokens",
    } <= (TUNABLE_ARGS)
    assert {"--dtype", "--quantization", "--kv-cache-dtype", "--max-model-len", "--chat-template"} <= set(
        FIXED_ARGS
    )
