"""Benchmark results in SQLite: runs (with their fingerprint and profile), steps (metrics), requests.

Each step is committed as soon as it is measured, so an interrupted run keeps what it measured
(its status stays ``interrupted``).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmfleet.bench.errors import BenchError
from llmfleet.bench.metrics import RequestResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL,
    profile_name TEXT NOT NULL,
    profile_json TEXT NOT NULL,
    target TEXT NOT NULL,
    base_url TEXT NOT NULL,
    model TEXT NOT NULL,
    fingerprint_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    experiment TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (run_id, experiment, concurrency)
);
CREATE TABLE IF NOT EXISTS requests (
    run_id TEXT NOT NULL REFERENCES runs(id),
    experiment TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    start_s REAL,
    ttft_s REAL,
    latency_s REAL,
    prompt_tokens INTEGER,
    output_tokens INTEGER,
    itl_json TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (run_id, experiment, concurrency, idx)
);
"""


@dataclass
class Step:
    experiment: str
    concurrency: int
    input_tokens: int
    output_tokens: int
    metrics: dict[str, float | int | None]


@dataclass
class Run:
    id: str
    created_at: str
    label: str
    status: str
    profile_name: str
    profile: dict[str, object]
    target: str
    base_url: str
    model: str
    fingerprint: dict[str, object]
    steps: list[Step] = field(default_factory=list)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, run: Run) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.created_at,
                    run.label,
                    run.status,
                    run.profile_name,
                    json.dumps(run.profile, sort_keys=True),
                    run.target,
                    run.base_url,
                    run.model,
                    json.dumps(run.fingerprint, sort_keys=True),
                ),
            )

    def add_step(self, run_id: str, step: Step, results: list[RequestResult]) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    step.experiment,
                    step.concurrency,
                    step.input_tokens,
                    step.output_tokens,
                    json.dumps(step.metrics, sort_keys=True),
                ),
            )
            self.db.executemany(
                "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        step.experiment,
                        step.concurrency,
                        i,
                        int(r.ok),
                        r.start,
                        r.ttft,
                        r.latency,
                        r.prompt_tokens,
                        r.output_tokens,
                        json.dumps(r.itl),
                        r.error,
                    )
                    for i, r in enumerate(results)
                ],
            )

    def finish_run(self, run_id: str, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def run_ids(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT id FROM runs ORDER BY created_at, id")]

    def load_run(self, run_id: str) -> Run:
        rows = self.db.execute(
            "SELECT id, created_at, label, status, profile_name, profile_json, target, base_url, model, "
            "fingerprint_json FROM runs WHERE id = ? OR label = ? ORDER BY created_at DESC",
            (run_id, run_id),
        ).fetchall()
        if not rows:
            known = ", ".join(self.run_ids()[-10:]) or "none"
            raise BenchError(f"no run {run_id!r} in {self.path} (latest runs: {known})")
        row = rows[0]
        run = Run(
            id=row[0],
            created_at=row[1],
            label=row[2],
            status=row[3],
            profile_name=row[4],
            profile=json.loads(row[5]),
            target=row[6],
            base_url=row[7],
            model=row[8],
            fingerprint=json.loads(row[9]),
        )
        for exp, conc, itok, otok, metrics in self.db.execute(
            "SELECT experiment, concurrency, input_tokens, output_tokens, metrics_json FROM steps "
            "WHERE run_id = ? ORDER BY rowid",
            (run.id,),
        ):
            run.steps.append(Step(exp, conc, itok, otok, json.loads(metrics)))
        return run

    def load_requests(self, run_id: str, experiment: str, concurrency: int) -> list[RequestResult]:
        return [
            RequestResult(
                ok=bool(ok),
                start=start,
                ttft=ttft,
                latency=lat,
                itl=json.loads(itl),
                prompt_tokens=ptok,
                output_tokens=otok,
                error=err,
            )
            for ok, start, ttft, lat, ptok, otok, itl, err in self.db.execute(
                "SELECT ok, start_s, ttft_s, latency_s, prompt_tokens, output_tokens, itl_json, error "
                "FROM requests WHERE run_id = ? AND experiment = ? AND concurrency = ? ORDER BY idx",
                (run_id, experiment, concurrency),
            )
        ]

    def list_runs(self) -> list[tuple[str, str, str, str, str, str]]:
        return list(
            self.db.execute(
                "SELECT id, created_at, label, status, profile_name, target FROM runs ORDER BY created_at, id"
            )
        )
