"""bench/staging.py on a few MiB: the report has its fields and the staged copy verified. No timing
is asserted (the figures are in the README); the page cache is left alone here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_staging", REPO / "bench" / "staging.py")
assert _spec and _spec.loader
staging = importlib.util.module_from_spec(_spec)
sys.modules["bench_staging"] = staging  # pydantic looks the models' module up there
_spec.loader.exec_module(staging)


def test_the_benchmark_stages_and_copies_the_same_bytes_and_reports_both(tmp_path):
    report = staging.run(tmp_path / "work", 3 * 2**20 + 5, files=3, rounds=2, workers=4, chunk=256 * 1024,
                         use_drop_caches=False)  # fmt: skip
    assert report.bytes == 3 * 2**20 + 5 + len(
        staging.json.dumps({"model_type": "synthetic", "bytes": 3 * 2**20 + 5})
    )
    assert report.files == 4  # three weight files and config.json
    assert report.staged_verified and report.problems == []
    assert [r.order for r in report.rounds] == [["staging", "plain"], ["plain", "staging"]]
    assert all(r.staging_s > 0 and r.plain_s > 0 for r in report.rounds)
    assert report.staging_mib_s > 0 and report.plain_mib_s > 0
    assert abs(report.ratio - report.staging_mib_s / report.plain_mib_s) < 0.01
    assert report.cache.startswith("not dropped (not asked to)")
    assert report.workers == 4 and report.chunk_bytes == 256 * 1024 and report.target_ratio == 0.9
    assert report.machine and report.filesystem
    assert not (tmp_path / "work" / "store").exists(), "the benchmark cleans up after itself"


def test_the_synthetic_model_has_the_asked_size_in_safetensors_files(tmp_path):
    staging.make_model(tmp_path / "m", 10 * 2**20 + 3, 4)
    weights = sorted((tmp_path / "m").glob("*.safetensors"))
    assert [p.name for p in weights] == [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]
    assert sum(p.stat().st_size for p in weights) == 10 * 2**20 + 3
    assert len({p.read_bytes()[:64] for p in weights}) == 4, "random bytes, not one block repeated"


def test_the_command_line_prints_both_throughputs_and_the_ratio(tmp_path, capsys):
    assert staging.main(["--size-mib", "2", "--files", "2", "--rounds", "1", "--no-drop-caches",
                         "--workdir", str(tmp_path / "w")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "staging (sha256 in the copy pass" in out and "plain copy" in out and "ratio staging/plain" in out
    assert "staged copy verified against its manifest: True" in out
