"""The IPVS rate estimator (spec/ipvs.md §3.11), step by step, and -Z's base."""

from __future__ import annotations

import numpy as np

from userlb import destctl, estimator
from userlb.engine import Engine
from userlb.estimator import Estimator, Row, report, step
from userlb.services import RealServer, VirtualService

WEB = VirtualService("tcp", "198.18.0.1", 80, "rr",
                     (RealServer("198.18.1.1", 80), RealServer("198.18.1.2", 80)))
DNS = VirtualService("udp", "198.18.0.1", 53, "rr", (RealServer("198.18.1.3", 53),))


def bump(eng, svc, row, conns=0, inpkts=0, outpkts=0, inbytes=0, outbytes=0):
    d = eng.services[svc].dests
    for name, value in (("conns", conns), ("inpkts", inpkts), ("outpkts", outpkts),
                        ("inbytes", inbytes), ("outbytes", outbytes)):
        getattr(d, name)[row] += value


def test_one_step_by_hand():
    delta = np.array([10, 100, 90, 3000, 120000])
    avg = step(np.zeros(5, np.int64), delta)
    # rate = Δ << 9 (pkts) or << 4 (bytes); avg += (rate - avg) >> 2
    assert avg.tolist() == [10 << 9 >> 2, 100 << 9 >> 2, 90 << 9 >> 2, 3000 << 4 >> 2,
                            120000 << 4 >> 2]
    assert avg.tolist() == [1280, 12800, 11520, 12000, 480000]
    # reported: (avg + 0x1FF) >> 10 and (avg + 0xF) >> 5
    assert report(avg).tolist() == [(1280 + 511) >> 10, (12800 + 511) >> 10,
                                     (11520 + 511) >> 10, (12000 + 15) >> 5, (480000 + 15) >> 5]
    assert report(avg).tolist() == [1, 12, 11, 375, 15000]


def test_steady_traffic_converges_step_by_step():
    avg = np.zeros(5, np.int64)
    cps = []
    for _ in range(6):                     # 10 connections and 3000 bytes every 2 s
        avg = step(avg, np.array([10, 0, 0, 3000, 0]))
        cps.append(int(report(avg)[0]))
    # avg: 1280, 2240, 2960, 3500, 3905, 4208 (→ 5120 = 5/s)
    assert cps == [1, 2, 3, 3, 4, 4]
    for _ in range(40):
        avg = step(avg, np.array([10, 0, 0, 3000, 0]))
    assert report(avg).tolist() == [5, 0, 0, 1500, 0]


def test_decay_is_an_arithmetic_shift():
    avg = step(np.array([1, 0, 0, 1, 0]), np.zeros(5, np.int64))
    assert avg.tolist() == [0, 0, 0, 0, 0]          # (0 - 1) >> 2 = -1, floor as the s64 shift


def test_tick_runs_due_steps_per_real_server_and_service():
    eng = Engine([WEB, DNS])
    est = Estimator()
    assert est.tick(eng, 100.0) == 0                 # starts the clock, no step
    bump(eng, 0, 0, conns=10, inpkts=100, inbytes=3000)
    bump(eng, 0, 1, conns=4, outpkts=8, outbytes=800)
    assert est.tick(eng, 101.9) == 0                 # not due yet
    assert est.tick(eng, 102.0) == 1
    r = est.rates(eng)
    uid0, uid1 = eng.services[0].dests.uid.tolist()
    assert r.dest(uid0) == Row(10, 100, 0, 3000, 0, 1, 12, 0, 375, 0)
    assert r.dest(uid1) == Row(4, 0, 8, 0, 800, (512 + 511) >> 10, 0, 1, 0, (3200 + 15) >> 5)
    svc = r.service(0)
    assert (svc.conns, svc.inpkts, svc.outpkts, svc.inbytes, svc.outbytes) == (14, 100, 8, 3000,
                                                                             800)
    assert svc.cps == ((14 << 9 >> 2) + 511) >> 10 == 2        # its own estimator, not a sum
    assert r.service(1) == Row()
    assert r.service_totals[0] == (14, 100, 8, 3000, 800)


def test_late_tick_spreads_the_change_over_the_missed_steps():
    eng, late, punctual = Engine([WEB]), Estimator(), Estimator()
    late.tick(eng, 0.0)
    punctual.tick(eng, 0.0)
    for t in (2.0, 4.0, 6.0):
        bump(eng, 0, 0, conns=10)
        punctual.tick(eng, t)
    assert late.tick(eng, 7.5) == 3                  # steps at 2, 4 and 6 s
    uid = int(eng.services[0].dests.uid[0])
    assert late.rates(eng).dest(uid) == punctual.rates(eng).dest(uid)
    assert late.rates(eng).dest(uid).cps == 3
    assert late.next_due == 8.0


def test_uneven_spread_and_long_gaps():
    avg = estimator._steps(np.zeros(5, np.int64), np.array([7, 0, 0, 0, 0]), 3)
    by_hand = np.zeros(5, np.int64)
    for part in (2, 2, 3):                           # ⌊7k/3⌋ differences
        by_hand = step(by_hand, np.array([part, 0, 0, 0, 0]))
    assert avg.tolist() == by_hand.tolist()
    eng, est = Engine([WEB]), Estimator()
    est.tick(eng, 0.0)
    bump(eng, 0, 0, conns=1000 * 500)                # 1000 steps' worth at 500 per step
    assert est.tick(eng, 2000.0) == 1000             # only the last 64 are computed
    uid = int(eng.services[0].dests.uid[0])
    assert est.rates(eng).dest(uid).cps == 250


def test_zero_remembers_a_base_and_restarts_rates():
    eng, est = Engine([WEB, DNS]), Estimator()
    est.tick(eng, 0.0)
    bump(eng, 0, 0, conns=10, inpkts=20)
    bump(eng, 1, 0, conns=5)
    est.tick(eng, 2.0)
    est.zero(eng)
    d = eng.services[0].dests
    assert int(d.conns[0]) == 10                     # raw counters untouched (Prometheus)
    uid = int(d.uid[0])
    assert est.rates(eng).dest(uid) == Row() and est.rates(eng).service(0) == Row()
    assert est.rates(eng).service_totals[0][0] == 10
    bump(eng, 0, 0, conns=2)
    est.tick(eng, 4.0)
    row = est.rates(eng).dest(uid)
    assert (row.conns, row.inpkts, row.cps) == (2, 0, ((2 << 9 >> 2) + 511) >> 10)


def test_zero_one_service_leaves_the_others():
    eng, est = Engine([WEB, DNS]), Estimator()
    est.tick(eng, 0.0)
    bump(eng, 0, 0, conns=10)
    bump(eng, 1, 0, conns=5)
    est.tick(eng, 2.0)
    est.zero(eng, 1)
    r = est.rates(eng)
    assert r.service(0).conns == 10 and r.service(0).cps == 1
    assert r.service(1) == Row()
    assert r.dest(eng.services[1].dests.uid[0]) == Row()


def test_removed_server_stays_in_its_service_total():
    eng, est = Engine([WEB]), Estimator()
    est.tick(eng, 0.0)
    bump(eng, 0, 0, conns=3)
    bump(eng, 0, 1, conns=4)
    est.tick(eng, 2.0)
    gone = int(eng.services[0].dests.uid[0])
    destctl.remove_dest(eng, 0, "198.18.1.2", 80)    # row 0 is the later-added .2
    destctl.add_dest(eng, 0, RealServer("198.18.1.9", 80))
    r = est.rates(eng)
    assert gone not in r.dests and len(r.dests) == 2
    assert r.service(0).conns == 7                   # as the kernel's own service counters
    bump(eng, 0, 0, conns=1)                         # the new server
    assert est.rates(eng).service(0).conns == 8


def test_module_functions_keep_one_estimator_per_engine():
    eng = Engine([WEB])
    assert estimator.for_engine(eng) is estimator.for_engine(eng)
    estimator.tick(eng, 0.0)
    bump(eng, 0, 0, conns=10)
    assert estimator.tick(eng, 2.0) == 1
    assert estimator.rates(eng).service(0).cps == 1
    estimator.zero(eng)
    assert estimator.rates(eng).service(0) == Row()
    assert estimator.for_engine(Engine([WEB])) is not estimator.for_engine(eng)
