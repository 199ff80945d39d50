"""Affinity against least-busy and round robin, on two real vLLM instances behind the real gateway.

The workload is the shared-prefix profile's request (512 tokens in, 448 of them a shared prefix, 32 out)
spread over several prefix groups, as tenants or conversations with their own long system prompts are:
``--groups`` prefixes, ``--per-group`` requests each, interleaved, ``--concurrency`` at a time, through
the gateway on loopback. Each policy gets prefixes of its own (a different seed), so what one run cached
cannot help the next. For each policy the gateway's pool is set by a redeploy (the instances stay; only
the gateway re-renders), then the load runs and, from vLLM's own metrics read on each instance before and
after, the prefix-cache hit rate (tokens found cached / tokens looked up) and each instance's share.

Run (deploys two CPU instances with tests/e2e/operations-vars.yml, gateway on 48000; undeploys after):
  .venv/bin/python bench/affinity.py [--groups 16] [--per-group 6] [--concurrency 4] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from llmfleet.bench.loadgen import Target, run_step
from llmfleet.bench.metrics import summarize
from llmfleet.bench.prompts import PromptMaker

REPO = Path(__file__).resolve().parents[1]
VARS_FILE = REPO / "tests" / "e2e" / "operations-vars.yml"
POLICY_FILE = REPO / "inventories" / "local" / "gateway-policy.yml"
BIN = Path(sys.executable).parent
MODEL = "smollm2-135m-instruct"
POLICIES = ("leastconn", "roundrobin", "affinity")
INPUT_TOKENS, PREFIX_TOKENS, OUTPUT_TOKENS = 512, 448, 32
_SAMPLE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+(\S+)$")


def playbook(*args: str, timeout: int = 1800) -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")


def policy_file(balance: str, folder: Path) -> Path:
    policy = yaml.safe_load(POLICY_FILE.read_text())
    policy["pools"] = {MODEL: {"balance": balance}}
    path = folder / f"gateway-policy-{balance}.yml"
    path.write_text("---\n" + yaml.safe_dump(policy, sort_keys=True))
    return path


def vllm_counters(url: str) -> dict[str, float]:
    """vLLM's counters on one instance, summed over their labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1).endswith("_total"):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def prompts_for(maker: PromptMaker, policy: str, groups: int, per_group: int) -> list[str]:
    """``groups`` prefixes of their own for this policy, ``per_group`` prompts each, interleaved."""
    by_group = []
    for g in range(groups):
        seed = int.from_bytes(hashlib.sha256(f"{policy}/{g}".encode()).digest()[:8], "big")
        by_group.append(maker.prompts(per_group, INPUT_TOKENS, PREFIX_TOKENS, seed=seed, prefix_seed=seed))
    return [group[i] for i in range(per_group) for group in by_group]


def run_policy(policy: str, args: argparse.Namespace, vars_: dict, folder: Path) -> dict[str, object]:
    playbook("deploy-model.yml", "-e", f"model={MODEL}", "-e", f"@{VARS_FILE}", "-e",
             f"gateway_policy_file={policy_file(policy, folder)}")  # fmt: skip
    registry = Path(vars_["llmfleet_common_state_dir"]) / "deployments" / f"{MODEL}.json"
    record = json.loads(registry.read_text())
    urls = [inst["url"] for inst in record["plan"]["instances"]]
    key = Path(record["api_key_file"]).read_text().strip()
    maker = PromptMaker.from_dir(Path(record["weights_path"]))
    prompts = prompts_for(maker, policy, args.groups, args.per_group)
    before = {url: vllm_counters(url) for url in urls}
    target = Target(base_url=record["endpoint"], model=MODEL, api="completions", api_key=key)
    results, duration = asyncio.run(run_step(target, prompts, OUTPUT_TOKENS, args.concurrency))
    after = {url: vllm_counters(url) for url in urls}

    def delta(name: str, url: str) -> float:
        return after[url].get(name, 0.0) - before[url].get(name, 0.0)

    queries = sum(delta("vllm:prefix_cache_queries_total", u) for u in urls)
    hits = sum(delta("vllm:prefix_cache_hits_total", u) for u in urls)
    done = [delta("vllm:request_success_total", u) for u in urls]
    metrics = summarize(results, duration)
    failed = [r.error for r in results if not r.ok]
    if failed:
        sys.exit(f"{policy}: {len(failed)} of {len(results)} requests failed, the first: {failed[0]}")
    return {
        "policy": policy,
        "requests": metrics["requests"],
        "errors": metrics["errors"],
        "p50_ttft_ms": metrics["p50_ttft_ms"],
        "p99_ttft_ms": metrics["p99_ttft_ms"],
        "output_throughput": metrics["output_throughput"],
        "request_throughput": metrics["request_throughput"],
        "prefix_cache_hit_rate": hits / queries if queries else None,
        "requests_per_instance": done,
    }


def table(rows: list[dict[str, object]]) -> str:
    base = rows[0]
    lines = [
        "| policy | requests (errors) | split | TTFT p50 ms | TTFT p99 ms | output tok/s "
        "| prefix-cache hit rate | p50 TTFT vs leastconn | throughput vs leastconn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        split = "/".join(str(int(n)) for n in r["requests_per_instance"])  # type: ignore[union-attr]
        hit = r["prefix_cache_hit_rate"]
        lines.append(
            f"| {r['policy']} | {r['requests']} ({r['errors']}) | {split} | {r['p50_ttft_ms']:.0f} | "
            f"{r['p99_ttft_ms']:.0f} | {r['output_throughput']:.1f} | "
            f"{'-' if hit is None else f'{hit:.1%}'} | "
            f"{r['p50_ttft_ms'] / base['p50_ttft_ms']:.2f} | "  # type: ignore[operator]
            f"{r['output_throughput'] / base['output_throughput']:.2f} |"  # type: ignore[operator]
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--per-group", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--keep", action="store_true", help="leave the deployment running")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    vars_ = yaml.safe_load(VARS_FILE.read_text())
    rows = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        try:
            for policy in args.policies:
                rows.append(run_policy(policy, args, vars_, Path(folder)))
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            if not args.keep:
                playbook("undeploy-model.yml", "-e", f"model={MODEL}", "-e", f"@{VARS_FILE}")
    print(table(rows))
    print(f"\n{args.groups} prefix groups x {args.per_group} requests, concurrency {args.concurrency}; "
          f"{time.monotonic() - t0:.0f} s in all")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
