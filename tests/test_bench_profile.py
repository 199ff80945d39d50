"""Workload profiles: every shipped profile loads; a broken one is refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.bench.errors import BenchError
from llmfleet.bench.profile import load_profile, parse_profile

PROFILES = sorted((Path(__file__).resolve().parents[1] / "bench" / "profiles").glob("*.yaml"))

GOOD = """
name: t
experiments:
  - name: short
    input_tokens: 64
    output_tokens: 8
    concurrency: [1, 2]
    requests: 4
"""


def test_profiles_are_shipped():
    assert len(PROFILES) >= 3


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_shipped_profile_loads(path):
    profile = load_profile(path)
    assert profile.name == path.stem
    # Bounded: every run has a time limit and a finite number of requests.
    assert profile.run_timeout_s <= 3600
    assert all(e.requests <= 1000 for e in profile.experiments)


def test_defaults():
    profile = parse_profile(GOOD)
    assert profile.api == "completions" and profile.ignore_eos is True
    assert profile.experiments[0].shared_prefix_tokens == 0


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            GOOD.replace("concurrency: [1, 2]", "concurrency: [0, 2]"),
            "experiments.0.concurrency",
            "between 1",
        ),
        (GOOD.replace("concurrency: [1, 2]", "concurrency: [2, 2]"), "experiments.0.concurrency", "distinct"),
        (GOOD.replace("concurrency: [1, 2]", "concurrency: []"), "experiments.0.concurrency", "at least 1"),
        (GOOD.replace("input_tokens: 64", "input_tokens: 0"), "experiments.0.input_tokens", "greater than"),
        (GOOD.replace("requests: 4", "requets: 4"), "experiments.0.requets", "unknown field"),
        (
            GOOD.replace("requests: 4", "requests: 4\n    shared_prefix_tokens: 64"),
            "experiments.0",
            "smaller",
        ),
        (GOOD + "api: grpc\n", "api", "completions"),
        (GOOD.replace("name: t", "name: 'bad name'"), "name", "pattern"),
        ("name: t\nexperiments: []\n", "experiments", "at least 1"),
    ],
)
def test_errors_name_the_field(text, field, message):
    with pytest.raises(BenchError) as err:
        parse_profile(text, "p.yaml")
    lines = str(err.value).splitlines()
    assert lines[0].startswith("p.yaml:")
    assert any(line.strip().startswith(f"{field}:") and message in line for line in lines[1:]), str(err.value)


def test_duplicate_experiment_names_are_refused():
    text = GOOD + GOOD.split("experiments:\n")[1]
    with pytest.raises(BenchError, match="repeated: short"):
        parse_profile(text)


def test_not_yaml_or_not_a_mapping():
    with pytest.raises(BenchError, match="not valid YAML"):
        parse_profile("name: [", "p.yaml")
    with pytest.raises(BenchError, match="expected a mapping"):
        parse_profile("- 1\n", "p.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BenchError, match=r"nope\.yaml"):
        load_profile(tmp_path / "nope.yaml")
