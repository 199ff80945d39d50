#!/usr/bin/python3
"""TEST STAND-IN for NVIDIA's nvidia-ctk (README.md next to this file): only `runtime configure`, docker."""

import argparse
import json
import os
import sys

VERSION = os.environ.get("FAKE_CTK_VERSION", "@VERSION@")

parser = argparse.ArgumentParser(prog="nvidia-ctk")
parser.add_argument("--version", action="store_true")
sub = parser.add_subparsers(dest="cmd")
runtime = sub.add_parser("runtime").add_subparsers(dest="action")
configure = runtime.add_parser("configure")
configure.add_argument("--runtime", required=True)
configure.add_argument("--config", default="/etc/docker/daemon.json")
configure.add_argument("--set-as-default", action="store_true")
args = parser.parse_args()
if args.version:
    print(f"NVIDIA Container Toolkit CLI version {VERSION} (llmfleet test stand-in)")
    sys.exit(0)
if args.cmd != "runtime" or args.action != "configure" or args.runtime != "docker":
    sys.exit("stand-in nvidia-ctk: only `runtime configure --runtime=docker` is implemented")
try:
    with open(args.config) as fh:
        config = json.load(fh)
except FileNotFoundError:
    config = {}
config.setdefault("runtimes", {})["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
if args.set_as_default:
    config["default-runtime"] = "nvidia"
with open(args.config, "w") as fh:
    json.dump(config, fh, indent=4)
    fh.write("\n")
print(f"INFO Wrote updated config to {args.config}")
