"""userlb.bench in smoke mode: every bench runs, writes complete JSON, and checks its
candidate against its baseline. No timing thresholds: benchmarks are never timed tests."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from userlb import sched
from userlb.bench import main
from userlb.bench import sched as sched_bench
from userlb.bench.conntable import OPS
from userlb.bench.harness import Prepared, compare, format_table

RESULT_FIELDS = {"name", "units", "candidate", "baseline", "ratio", "ratio_median", "checked"}
RATE_FIELDS = {"samples", "best_s_per_op", "median_s_per_op", "ops_per_s_best",
               "ops_per_s_median"}


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    for bench in ("sched", "conntable", "engine"):
        assert main([bench, "--smoke", "--out", str(out), "--max-seconds", "3"]) == 0
    return {name: json.loads((out / f"{name}.json").read_text())
            for name in ("sched", "conntable", "engine")} | {"dir": out}


def check_results(payload):
    assert payload["results"]
    for r in payload["results"]:
        assert RESULT_FIELDS <= set(r)
        assert RATE_FIELDS <= set(r["candidate"]) and RATE_FIELDS <= set(r["baseline"])
        assert r["ratio"] > 0 and r["checked"] is True
    assert payload["checks"]["passed"] == payload["checks"]["configurations"] == len(payload["results"])
    assert payload["meta"]["mode"] == "smoke"
    png = payload["files"]["png"]
    if has_matplotlib():
        assert png and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_sched_report_covers_every_scheduler(reports):
    p = reports["sched"]
    check_results(p)
    names = sched.available()
    assert p["schedulers"] == names
    configs = {(r["name"], r["servers"], r["batch"]) for r in p["results"]}
    assert configs == {(n, s, b) for n in names for s in p["servers"] for b in p["batches"]}
    assert set(p["summary"]) == set(names)
    for name in ("rr", "wrr", "dh", "sh", "mh", "lc", "wlc", "sed", "nq"):
        s = p["summary"][name]
        assert s["target"] == p["targets"][name]
        assert set(s["ratio_at_target_batch"]) == {str(n) for n in p["servers"]}
        assert isinstance(s["meets_target"], bool)


def test_conntable_report(reports):
    p = reports["conntable"]
    check_results(p)
    assert {(r["name"], r["batch"]) for r in p["results"]} == \
        {(op, b) for op in OPS for b in p["batches"]}
    mem = p["memory"]
    assert mem["bytes_per_conn"] == mem["nbytes"] / mem["entries"] > 0
    assert isinstance(p["summary"]["memory_meets_target"], bool)
    assert isinstance(p["summary"]["lookup_meets_target"], bool)


def test_engine_report(reports):
    p = reports["engine"]
    check_results(p)
    assert p["workloads"] == ["tcp", "udp", "offload"]
    assert [(r["workload"], r["batch"]) for r in p["results"]] == \
        [(w, b) for w in p["workloads"] for b in p["batches"]]
    assert set(p["summary"]["us_per_packet"]) == {str(b) for b in p["batches"]}
    for w in p["workloads"]:
        assert set(p["summary"]["workloads"][w]["ratio"]) == {str(b) for b in p["batches"]}


def test_sched_check_catches_a_wrong_batch_form(monkeypatch):
    cls = type(sched.create("rr"))
    real = cls.schedule_batch
    monkeypatch.setattr(cls, "schedule_batch", lambda self, d, f, now: real(self, d, f, now)[::-1])
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError, match="rr: picks differ"):
        sched_bench.measure("rr", sched_bench.make_dests(3, rng), sched_bench.make_flows(8, rng),
                            repeat=1, max_seconds=0.1)


def test_compare_is_bounded_by_count_and_by_time():
    c = compare(lambda: sum(range(100)), lambda: sum(range(1000)), ops=1, repeat=3, max_seconds=5)
    assert len(c.candidate.samples_s) == len(c.baseline.samples_s) <= 3
    slow = compare(lambda: time.sleep(0.02), lambda: time.sleep(0.02), ops=1, repeat=100,
                   max_seconds=0.05)
    assert len(slow.candidate.samples_s) == 1           # the warm-up call stands in


def test_compare_prepares_untimed_state_and_runs_the_check():
    seen = []
    side = Prepared(lambda: [3, 1, 2], lambda xs: sorted(xs))
    c = compare(side, side, ops=3, repeat=2, max_seconds=1,
                check=lambda a, b: seen.append((a, b)))
    assert seen == [([1, 2, 3], [1, 2, 3])] and c.checked


def test_format_table():
    text = format_table(["a", "ratio"], [["x", 1.23456], ["yy", 12345.6]])
    assert text.splitlines()[2:] == [" x    1.23", "yy  12,346"]
