"""health.policy and health.schedule: result sequences in, state changes and events out (no I/O, no clock)."""

from __future__ import annotations

import dataclasses

import pytest

from userlb.health import (ExternalCheck, HealthChanged, HealthPolicy, ProbeResult, QuorumChanged,
                           ServiceHealth, TcpCheck, quorum_next, real_key, with_preset)
from userlb.health.policy import next_delay_s
from userlb.health.schedule import CheckSchedule
from userlb.services import RealServer, VirtualService

PASS, FAIL = ProbeResult(True, 0.001, "ok"), ProbeResult(False, 0.001, "refused")
A, B, C, D = (RealServer(f"10.0.1.{i}", 80, 1) for i in range(1, 5))
SORRY = RealServer("10.0.9.9", 80, 1)

NANNY = with_preset(TcpCheck(), "nanny", timeout_s=10, reentry_s=30)        # rise 3, fall 1, alpha
KEEPALIVED = with_preset(TcpCheck(), "keepalived", delay_loop_s=6, retry=2)  # fall 3, rise 1, starts up
KEEPALIVED_ALPHA = dataclasses.replace(KEEPALIVED, alpha=True)
CUSTOM = TcpCheck(rise=2, fall=2, warmup_s=0)


def service(reals=(A,), checks=None, **health) -> ServiceHealth:
    vs = VirtualService("tcp", "198.18.0.100", 80, reals=tuple(reals))
    checks = checks if checks is not None else tuple((TcpCheck(warmup_s=0),) for _ in reals)
    return ServiceHealth(service=vs, checks=checks, **health)


def hc(events) -> list[tuple[bool, int | None]]:
    """(up, weight) of the HealthChanged events, in order."""
    return [(e.up, e.weight) for e in events if isinstance(e, HealthChanged)]


def run_sequence(check, results: str) -> str:
    """Feed P/F results to one check of one server; return the server state after init and each result."""
    svc = service(checks=((check,),))
    policy = HealthPolicy([svc], 0.0)
    cid = policy.check_ids()[0]
    states = ["U" if policy.entry(svc.key, real_key(A))[0] else "D"]
    for t, r in enumerate(results, start=1):
        policy.observe(cid, PASS if r == "P" else FAIL, float(t))
        states.append("U" if policy.entry(svc.key, real_key(A))[0] else "D")
    return "".join(states)


# (description, check, results, server state before and after each result)
SEQUENCES = [
    ("nanny: alpha, the first pass brings the server in", NANNY, "P", "DU"),
    ("nanny: one failure takes it out", NANNY, "PF", "DUD"),
    ("nanny: reentry/timeout = 3 passes bring it back", NANNY, "PFPPP", "DUDDDU"),
    ("nanny: a failure resets the re-entry count", NANNY, "PFPPFPPP", "DUDDDDDDU"),
    ("nanny: a failure before the first pass costs the head start", NANNY, "FPPP", "DDDDU"),
    ("keepalived: starts up, retry 2 → 3rd failure takes it out", KEEPALIVED, "FFF", "UUUD"),
    ("keepalived: a pass between failures resets the retries", KEEPALIVED, "FFPFF", "UUUUUU"),
    ("keepalived: one pass brings it back", KEEPALIVED, "FFFP", "UUUDU"),
    ("keepalived alpha: starts down, one pass in", KEEPALIVED_ALPHA, "PFFF", "DUUUD"),
    ("custom rise 2 fall 2", CUSTOM, "FFPFPP", "UUDDDDU"),
    ("custom rise 2 fall 2: isolated failures never take it out", CUSTOM, "FPFPFP", "UUUUUUU"),
]


@pytest.mark.parametrize("description,check,results,expected", SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_result_sequences(description, check, results, expected):
    assert run_sequence(check, results) == expected


def test_nanny_preset_knobs():
    check = with_preset(TcpCheck(), "nanny", timeout_s=10, reentry_s=180)
    assert (check.rise, check.fall, check.interval_s, check.connect_timeout_s) == (18, 1, 10, 10)
    assert check.alpha and check.initial_rise == 1 and check.warmup_s == 0


def test_several_checks_per_server_all_must_pass():
    svc = service(checks=((CUSTOM, dataclasses.replace(CUSTOM, fall=1)),))
    policy = HealthPolicy([svc], 0.0)
    first, second = policy.check_ids()
    assert policy.observe(second, FAIL, 1.0) == [HealthChanged(
        svc.key, real_key(A), False, None, "tcp 10.0.1.1:80: refused (1/1 failures, check down)"),
        QuorumChanged(svc.key, False, 0, "quorum lost: live weight 0, quorum 1 hysteresis 0")]
    assert policy.observe(first, FAIL, 2.0) == []           # first check: 1 of 2 failures
    assert policy.observe(first, FAIL, 3.0) == []           # both down now: still one DOWN event only
    assert policy.observe(second, PASS, 4.0) == []          # second up again, first still down
    assert policy.observe(second, PASS, 5.0) == []
    assert policy.observe(first, PASS, 6.0) == []
    assert hc(policy.observe(first, PASS, 7.0)) == [(True, 1)]


@pytest.mark.parametrize("on_failure,down_weight", [("quiesce", 0), ("remove", None)])
def test_quiesce_or_remove(on_failure, down_weight):
    heavy = dataclasses.replace(A, weight=5)
    svc = service(reals=(heavy,), checks=((TcpCheck(fall=1, warmup_s=0),),), on_failure=on_failure)
    policy = HealthPolicy([svc], 0.0)
    (cid,) = policy.check_ids()
    down = [e for e in policy.observe(cid, FAIL, 1.0) if isinstance(e, HealthChanged)]
    assert [(e.real_key, e.up, e.weight) for e in down] == [(real_key(heavy), False, down_weight)]
    up = [e for e in policy.observe(cid, PASS, 2.0) if isinstance(e, HealthChanged)]
    assert [(e.up, e.weight) for e in up] == [(True, 5)]      # back to the configured weight


def test_alpha_start_reports_initial_table():
    svc = service(reals=(A, B), checks=((KEEPALIVED_ALPHA,), (KEEPALIVED,)), on_failure="quiesce")
    events = HealthPolicy([svc], 0.0).initial_events()
    reals = [(e.real_key, e.up, e.weight) for e in events if isinstance(e, HealthChanged)]
    assert reals == [(real_key(A), False, 0), (real_key(B), True, 1)]
    assert [e.up for e in events if isinstance(e, QuorumChanged)] == [True]


def test_sorry_server_when_every_real_is_down():
    svc = service(reals=(A, B), checks=((TcpCheck(fall=1, warmup_s=0),),) * 2, sorry_server=SORRY)
    policy = HealthPolicy([svc], 0.0)
    assert [e for e in policy.initial_events() if e.__class__ is HealthChanged and e.real_key == real_key(SORRY)] == []
    ca, cb = policy.check_ids()
    assert [type(e) for e in policy.observe(ca, FAIL, 1.0)] == [HealthChanged]
    events = policy.observe(cb, FAIL, 2.0)
    assert [(type(e).__name__, getattr(e, "real_key", None), e.up) for e in events] == [
        ("HealthChanged", real_key(B), False),
        ("QuorumChanged", None, False),
        ("HealthChanged", real_key(SORRY), True)]
    events = policy.observe(ca, PASS, 3.0)
    assert [(type(e).__name__, getattr(e, "real_key", None), e.up) for e in events] == [
        ("HealthChanged", real_key(A), True),
        ("QuorumChanged", None, True),
        ("HealthChanged", real_key(SORRY), False)]
    assert events[-1].weight is None


# (up before, live weight, quorum, hysteresis, up after) — keepalived update_quorum_state
QUORUM = [
    (True, 4, 3, 1, True), (True, 2, 3, 1, True), (True, 1, 3, 1, False), (True, 0, 0, 0, False),
    (False, 2, 3, 1, False), (False, 3, 3, 1, False), (False, 4, 3, 1, True), (False, 1, 1, 0, True),
]


@pytest.mark.parametrize("up,live,quorum,hysteresis,expected", QUORUM)
def test_quorum_next(up, live, quorum, hysteresis, expected):
    assert quorum_next(up, live, quorum, hysteresis) is expected


def test_quorum_hysteresis_and_sorry_server_take_live_reals_out():
    reals = (A, B, C, D)
    svc = service(reals=reals, checks=((TcpCheck(fall=1, warmup_s=0),),) * 4,
                  quorum=3, hysteresis=1, sorry_server=SORRY, on_failure="quiesce")
    policy = HealthPolicy([svc], 0.0)
    ids = policy.check_ids()
    quorum = []
    for t, (i, result) in enumerate([(0, FAIL), (1, FAIL), (2, FAIL), (0, PASS), (1, PASS), (2, PASS)]):
        policy.observe(ids[i], result, float(t + 1))
        quorum.append(policy.quorum_up(svc.key))
    #           live:  3     2     1      2      3      4
    assert quorum == [True, True, False, False, False, True]
    # while quorum is lost, healthy reals are out of the pool (quiesced) and the sorry server is in
    policy = HealthPolicy([svc], 0.0)
    for t, i in enumerate(range(3)):
        events = policy.observe(ids[i], FAIL, float(t + 1))
    assert {(e.real_key, e.up, e.weight) for e in events if isinstance(e, HealthChanged)} == {
        (real_key(C), False, 0), (real_key(D), False, 0), (real_key(SORRY), True, 1)}


def test_dynamic_weight_from_external_check():
    ext = ExternalCheck(program="/bin/check", dynamic=True, fall=1, warmup_s=0)
    svc = service(checks=((ext,),))
    policy = HealthPolicy([svc], 0.0)
    (cid,) = policy.check_ids()
    assert hc(policy.observe(cid, ProbeResult(True, 0, "exit 7", 5), 1.0)) == [(True, 5)]
    assert policy.observe(cid, ProbeResult(True, 0, "exit 0"), 2.0) == []     # exit 0: weight unchanged
    # §9 / #2720: a failure carrying a weight sets nothing and takes the server down
    assert hc(policy.observe(cid, ProbeResult(False, 0, "timed out", 250), 3.0)) == [(False, None)]
    assert hc(policy.observe(cid, PASS, 4.0)) == [(True, 5)]


def test_failed_external_check_never_counts_as_pass():
    """§9.5: nanny counted a failing send_program as a pass when `expect` was set; we never do."""
    ext = with_preset(ExternalCheck(program="/bin/false"), "nanny", timeout_s=1, reentry_s=1)
    svc = service(checks=((ext,),))
    policy = HealthPolicy([svc], 0.0)
    (cid,) = policy.check_ids()
    for t in range(5):
        policy.observe(cid, ProbeResult(False, 0, "exit 1"), float(t))
    assert policy.entry(svc.key, real_key(A)) == (False, None)


def test_reload_keeps_failing_server_down_and_applies_weight_changes():
    svc = service(reals=(A, B), checks=((TcpCheck(fall=1, warmup_s=0),),) * 2)
    policy = HealthPolicy([svc], 0.0)
    ca, _ = policy.check_ids()
    policy.observe(ca, FAIL, 1.0)
    due = policy.next_due(ca)
    heavier_b = dataclasses.replace(B, weight=4)
    reloaded = dataclasses.replace(svc, service=dataclasses.replace(svc.service, reals=(A, heavier_b, C)),
                                   checks=svc.checks + ((TcpCheck(warmup_s=0),),))
    events = policy.reload([reloaded], 2.0)
    assert [(e.real_key, e.up, e.weight) for e in events if isinstance(e, HealthChanged)] == [
        (real_key(B), True, 4), (real_key(C), True, 1)]        # A stays down (#1720), B's weight (#187)
    assert policy.entry(svc.key, real_key(A)) == (False, None) and policy.next_due(ca) == due
    assert hc(policy.observe(ca, PASS, 3.0)) == [(True, 1)]


def test_delay_before_retry_while_failing_then_interval():
    check = TcpCheck(interval_s=6, delay_before_retry_s=1, fall=3, warmup_s=0)
    svc = service(checks=((check,),))
    policy = HealthPolicy([svc], 0.0)
    (cid,) = policy.check_ids()
    gaps = []
    for now in (0.0, 10.0, 20.0, 30.0):
        policy.observe(cid, FAIL, now)
        gaps.append(policy.next_due(cid) - now)
    assert gaps == [1, 1, 6, 6]           # retries at delay_before_retry, then delay_loop once down
    assert next_delay_s(check, policy.check_state(cid)) == 6


def test_first_runs_are_jittered_deterministically():
    checks = ((TcpCheck(interval_s=10),), (TcpCheck(interval_s=10, warmup_s=2),), (TcpCheck(warmup_s=0),))
    svc = service(reals=(A, B, C), checks=checks)
    due = lambda seed: [HealthPolicy([svc], 100.0, seed=seed).next_due(c) - 100.0
                        for c in HealthPolicy([svc], 0.0).check_ids()]
    assert due(7) == due(7) and due(7) != due(8)
    first, second, third = due(7)
    assert 0 <= first <= 10 and 0 <= second <= 2 and third == 0


def test_schedule_bounds_concurrency():
    schedule = CheckSchedule(seed=1, max_concurrent=2)
    for i in range(5):
        schedule.keep(i, float(i))
    assert schedule.due(1.5) == [0, 1] and schedule.next_deadline() is None   # both slots busy
    schedule.finish(0, 10.0)
    assert schedule.next_deadline() == 2.0
    assert schedule.due(3.0) == [2]
    assert schedule.due(10.0) == []
    schedule.finish(1, 20.0)
    schedule.finish(2, 20.0)
    assert schedule.due(10.0) == [3, 4] and schedule.running == {3, 4}


def test_reload_removes_a_sorry_server_that_is_no_longer_configured():
    svc = service(checks=((TcpCheck(fall=1, warmup_s=0),),), sorry_server=SORRY)
    policy = HealthPolicy([svc], 0.0)
    (cid,) = policy.check_ids()
    policy.observe(cid, FAIL, 1.0)
    assert policy.entry(svc.key, real_key(SORRY)) == (True, 1)
    other = RealServer("10.0.9.10", 80, 2)
    events = policy.reload([dataclasses.replace(svc, sorry_server=other)], 2.0)
    assert [(e.real_key, e.up, e.weight) for e in events if isinstance(e, HealthChanged)] == [
        (real_key(other), True, 2), (real_key(SORRY), False, None)]
