"""Every subcommand, given bad input: one line on stderr naming the flag or file, a documented exit code,
and never a traceback (llmfleet.cliargs is the one layer that makes it so)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.cli import main
from llmfleet.cliargs import EXIT_CODES

REPO = Path(__file__).resolve().parents[1]
SMOLLM_CONFIG = REPO / "tests" / "data" / "hf-configs" / "HuggingFaceTB--SmolLM2-135M-Instruct"
MODEL = "smollm2-135m-instruct"
PLAN = ["--gpu", "H100-80GB", "--gpus-per-node", "8", "--max-model-len", "4096"]
STAGE = ["weights", "stage", MODEL, "--store", "{bad}/store", "--serving-root", "{bad}/srv"]
READY = ["ready", "--url", "http://127.0.0.1:9", "--model", "m"]
CAPACITY = ["capacity", "plan", "--config", str(SMOLLM_CONFIG)]


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    """A folder with a file where folders are expected, broken YAML, and a source holding its store."""
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "broken.yml").write_text("models: [\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}\n")
    return tmp_path


# (argv with {bad} for the folder above, exit code, what the one line must name)
CASES = [
    (["--catalog", "{bad}/missing.yml", "catalog", "check"], 3, "{bad}/missing.yml"),
    (["--catalog", "{bad}/broken.yml", "catalog", "list"], 3, "line 2, column 1"),
    (["catalog", "show", "no-such-model"], 4, "no-such-model"),
    (["plan", "--model", MODEL, "--settings-json", "{bad"], 2, "--settings-json is not valid JSON"),
    (["plan", "--model", MODEL, "--settings-json", '{"profile": "cpu", "max_num_seqs": "x"}'], 2,
     "--settings-json: max_num_seqs"),
    (["plan", "--model", MODEL, "--settings-json", '{"profile": "cpu"}', "--host-facts-json", "[1]"], 2,
     "--host-facts-json"),
    (["weights", "import", "no-such-model", "--store", "{bad}/store"], 4, "no-such-model"),
    (["weights", "import", MODEL, "--store", "{bad}/store", "--golden-max-gib", "0"], 2, "--golden-max-gib"),
    (["weights", "import", MODEL, "--store", "{bad}/store", "--workers", "0"], 2, "--workers"),
    (["weights", "publish", MODEL, "--from", "{bad}/missing", "--store", "{bad}/store"], 6, "{bad}/missing"),
    (["weights", "publish", MODEL, "--from", "{bad}/src", "--store", "{bad}/afile/store"], 13, "--store"),
    (["weights", "publish", MODEL, "--from", "{bad}/src", "--store", "{bad}/src/store"], 6,
     "copy the store into itself"),
    ([*STAGE, "--workers", "0"], 2, "--workers"),
    ([*STAGE, "--reads", "fast"], 2, "--reads"),
    (STAGE, 6, "manifest.json"),
    (["weights", "gc", MODEL, "--serving-root", "{bad}/srv", "--keep", "0"], 2, "--keep"),
    (["weights", "verify", MODEL, "--registry", "{bad}/registry"], 6, "--path"),
    (["gateway", "sync-keys", "--keys-dir", "{bad}/keys", "--policy-file", "{bad}/broken.yml"], 7,
     "{bad}/broken.yml"),
    (["gateway", "render", "--keys-dir", "{bad}/keys", "--settings-json", '{"listen_port": "x"}'], 2,
     "--settings-json: listen_port"),
    (["gateway", "render-apim", "--out", "{bad}/afile", "--registry", "{bad}/r", "--keys-dir", "{bad}/k"], 13,
     "--out"),
    (["gateway", "drain", "--model", "m", "--instance", "i", "--timeout", "-1"], 2, "--timeout"),
    (["gateway", "readmit", "--model", "m"], 2, "--instance"),
    (["keys", "add", "bob", "--models", "*", "--rpm", "0"], 2, "--rpm"),
    (["keys", "add", "bob", "--models", "*", "--tokens-per-day", "many"], 2, "--tokens-per-day"),
    (["keys", "list", "--gateway-config-dir", "{bad}/gw"], 7, "--gateway-config-dir"),
    (["keys", "revoke", "bob", "--gateway-config-dir", "{bad}/gw"], 7, "{bad}/gw/gateway.json"),
    ([*READY, "--timeout", "0"], 2, "--timeout"),
    ([*READY, "--service", "x", "--supervisorctl-json", "{"], 2, "--supervisorctl-json"),
    (["capacity", "plan", "--config", "{bad}/afile", *PLAN], 9, "{bad}/afile"),
    ([*CAPACITY, *PLAN, "--gpus-per-node", "0"], 9, "--gpus-per-node"),
    ([*CAPACITY, *PLAN[2:], "--gpu", "NOPE"], 3, "NOPE"),
    (["capacity", "render", "--config", str(SMOLLM_CONFIG), *PLAN, "--env", "x", "--out", "{bad}/afile"], 13,
     "--out"),
    (["inventory", "from-terraform"], 2, "--env"),
    (["bench", "run", "--profile", "{bad}/broken.yml"], 20, "line 2, column 1"),
    (["bench", "compare", "a", "b", "--db", "{bad}/runs.sqlite"], 20, "'a'"),
    (["bench", "crosscheck", "--concurrency", "0"], 2, "--concurrency"),
    (["sweep", "--model", MODEL, "--vary", "x=1", "--profile", "{bad}/broken.yml"], 20, "{bad}/broken.yml"),
    (["preflight", "gpu"], 2, "--image-version"),
    (["status", "--registry", "{bad}/afile"], 2, "--registry"),
    (["status", "--inventory", "{bad}/inv"], 14, "--inventory"),
    (["fleet", "place", "--inventory", "{bad}/inv"], 14, "{bad}/inv/fleet.yml"),
    (["fleet", "show", "--inventory", "{bad}/inv"], 14, "{bad}/inv/fleet-placement.yml"),
    (["fleet", "scale", "--inventory", "{bad}", MODEL, "-1"], 2, "REPLICAS"),
    (["fleet", "remove", "--inventory", "{bad}/inv", MODEL], 14, "{bad}/inv/fleet.yml"),
    (["fleet", "drain", "--inventory", "{bad}/inv", "node-1"], 14, "{bad}/inv/fleet.yml"),
    (["fleet", "undrain", "--inventory", "{bad}/inv", "node-1"], 14, "{bad}/inv/fleet.yml"),
    (["fleet", "add-node", "--inventory", "{bad}/inv", "n1", "--gpu", "T4-16GB"], 2,
     "gpu and gpus go together"),
    (["no-such-command"], 2, "no-such-command"),
]  # fmt: skip


def call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own exit for a usage error
        return int(exc.code or 0)


@pytest.mark.parametrize(("argv", "code", "named"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_ends_in_one_line_naming_what_to_fix(bad, capsys, argv, code, named):
    argv = [a.replace("{bad}", str(bad)) for a in argv]
    rc = call(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert rc == code, err
    assert rc in EXIT_CODES
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llmfleet"), err
    assert named.replace("{bad}", str(bad)) in lines[0]


def test_every_subcommand_has_a_bad_input_case():
    import argparse

    from llmfleet.cli import build_parser

    def leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    inner = leaves(child, (*prefix, name))
                    found |= inner or {(*prefix, name)}
        return found

    def covered(leaf: tuple[str, ...]) -> bool:
        n = len(leaf)
        return any(tuple(argv[i : i + n]) == leaf for argv, _, _ in CASES for i in range(len(argv)))

    missing = {leaf for leaf in leaves(build_parser()) if not covered(leaf)}
    missing -= {("host-facts",), ("gpu-facts",), ("bench", "list")}  # they take no input that can be wrong
    assert not missing, f"subcommands without a bad-input case: {sorted(missing)}"


def test_a_bug_is_one_line_with_exit_70_and_the_traceback_on_request(monkeypatch, capsys):
    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr("llmfleet.deploy.cli.cmd_status", broken)
    monkeypatch.delenv("LLMFLEET_DEBUG", raising=False)
    assert call(["status"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "LLMFLEET_DEBUG=1" in err
    monkeypatch.setenv("LLMFLEET_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["status"])


def test_the_process_prints_no_traceback(bad):
    """The same, as a user sees it: the installed command in its own process."""
    for argv in (
        ["keys", "add", "bob", "--models", "*", "--rpm", "0"],
        ["status", "--registry", str(bad / "afile")],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "llmfleet", *argv], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
