"""Run a profile against a deployment and store every step as it completes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmfleet.bench.errors import BenchError
from llmfleet.bench.fingerprint import deployment_record, fingerprint
from llmfleet.bench.loadgen import Target, check_loopback, run_step, stderr_progress
from llmfleet.bench.metrics import summarize
from llmfleet.bench.profile import Profile
from llmfleet.bench.prompts import PromptMaker
from llmfleet.bench.store import ResultStore, Run, Step, new_run_id


@dataclass(frozen=True)
class Resolved:
    target: Target
    tokenizer_dir: Path
    kind: str  # gateway | instance | url


def resolve_target(
    model: str,
    kind: str,
    api: str,
    registry_dir: Path,
    base_url: str | None = None,
    api_key_file: Path | None = None,
    tokenizer_dir: Path | None = None,
) -> Resolved:
    """Where to send requests, with which key, and which tokenizer builds the prompts.

    The deployment record (``<registry>/<model>.json``) gives the gateway endpoint, its key file, the
    instances' direct URLs and the served weights folder; explicit arguments override it.
    """
    record = deployment_record(registry_dir, model)
    if record is None and (base_url is None or tokenizer_dir is None):
        raise BenchError(
            f"no deployment record for {model!r} in {registry_dir}; "
            "deploy it, or pass --base-url and --tokenizer"
        )
    record = record or {}
    if base_url is None:
        if kind == "gateway":
            base_url = str(record["endpoint"])
        else:
            instances = record["plan"]["instances"]  # type: ignore[index]
            base_url = str(instances[0]["url"]).rstrip("/") + "/v1"
    if api_key_file is None and kind == "gateway" and record.get("api_key_file"):
        api_key_file = Path(str(record["api_key_file"]))
    key = None
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().strip()
        except OSError as exc:
            raise BenchError(f"cannot read the API key file {api_key_file}: {exc.strerror}") from None
    tokenizer = tokenizer_dir or Path(str(record["weights_path"]))
    check_loopback(base_url)
    return Resolved(Target(base_url=base_url, model=model, api=api, api_key=key), tokenizer, kind)


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def run_profile(
    profile: Profile,
    resolved: Resolved,
    store: ResultStore,
    registry_dir: Path,
    label: str = "",
    extra_vars: dict[str, object] | None = None,
    quiet: bool = False,
) -> Run:
    """Measure every experiment at every concurrency of ``profile``. Each step is committed when done;
    Ctrl-C marks the run ``interrupted`` and keeps the steps already measured."""
    maker = PromptMaker.from_dir(resolved.tokenizer_dir)
    target = resolved.target
    run = Run(
        id=new_run_id(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        label=label,
        status="running",
        profile_name=profile.name,
        profile=profile.model_dump(mode="json"),
        target=resolved.kind,
        base_url=target.base_url,
        model=target.model,
        fingerprint=fingerprint(target.model, registry_dir, extra_vars=extra_vars),
    )
    store.start_run(run)
    log = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    log(f"run {run.id}: profile {profile.name}, {target.url}")
    run_deadline = time.monotonic() + profile.run_timeout_s
    status = "complete"
    try:
        for exp in profile.experiments:
            if profile.warmup_requests:
                warm = maker.prompts(
                    profile.warmup_requests,
                    exp.input_tokens,
                    exp.shared_prefix_tokens,
                    seed=_seed(profile.seed, exp.name, "warmup"),
                    prefix_seed=_seed(profile.seed, exp.name),
                )
                asyncio.run(
                    run_step(
                        target,
                        warm,
                        exp.output_tokens,
                        1,
                        ignore_eos=profile.ignore_eos,
                        temperature=profile.temperature,
                        request_timeout_s=profile.request_timeout_s,
                        step_timeout_s=min(profile.step_timeout_s, profile.request_timeout_s),
                    )
                )
            for conc in exp.concurrency:
                if time.monotonic() > run_deadline:
                    log(f"run_timeout_s ({profile.run_timeout_s:g} s) reached; stopping")
                    status = "truncated"
                    break
                # Fresh prompts per step (same shared prefix): a repeated prompt would hit the prefix cache.
                prompts = maker.prompts(
                    exp.requests,
                    exp.input_tokens,
                    exp.shared_prefix_tokens,
                    seed=_seed(profile.seed, exp.name, conc),
                    prefix_seed=_seed(profile.seed, exp.name),
                )
                step_timeout = min(profile.step_timeout_s, max(run_deadline - time.monotonic(), 1.0))
                results, duration = asyncio.run(
                    run_step(
                        target,
                        prompts,
                        exp.output_tokens,
                        conc,
                        ignore_eos=profile.ignore_eos,
                        temperature=profile.temperature,
                        request_timeout_s=profile.request_timeout_s,
                        step_timeout_s=step_timeout,
                        progress=None if quiet else stderr_progress(f"{exp.name} c={conc}"),
                    )
                )
                metrics = summarize(results, duration)
                metrics["loadavg_1m_end"] = os.getloadavg()[0]
                store.add_step(
                    run.id, Step(exp.name, conc, exp.input_tokens, exp.output_tokens, metrics), results
                )
                run.steps.append(Step(exp.name, conc, exp.input_tokens, exp.output_tokens, metrics))
                if metrics["errors"]:
                    first = next(r.error for r in results if not r.ok)
                    log(f"  {metrics['errors']} error(s); first: {first}")
            if status != "complete":
                break
    except KeyboardInterrupt:
        store.finish_run(run.id, "interrupted")
        run.status = "interrupted"
        log(f"interrupted: run {run.id} keeps its {len(run.steps)} measured step(s)")
        raise
    store.finish_run(run.id, status)
    run.status = status
    return run
