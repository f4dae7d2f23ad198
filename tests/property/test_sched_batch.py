"""Batch form == sequential form for every scheduler, plus wrr/sh/dh/mh laws.

The reference is BaseScheduler.schedule_batch: schedule() on each flow in turn,
each pick bound on a scratch copy (TCP → active + 1, UDP → inactive + 1,
OVERLOAD at u_threshold). Two identically built instances of a scheduler are
compared, one through its own (possibly vectorised) schedule_batch.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import reduce
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userlb import sched
from userlb.sched import leastconn
from userlb.sched.base import NO_DEST, BaseScheduler, FlowBatch
from userlb.services import DEST_F_AVAILABLE, DEST_F_OVERLOAD, DestTable

SETTINGS = settings(max_examples=60, deadline=None)
ALL = sorted(["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "lblc", "lblcr",
              "dh", "sh", "mh"])
FLAG_CHOICES = {"sh": [(), ("sh-fallback",), ("sh-port",), ("sh-fallback", "sh-port")],
                "mh": [(), ("mh-fallback",), ("mh-port",), ("mh-fallback", "mh-port")]}
BASE = 0xC6120100                                   # 198.18.1.0


LEAST = ["lc", "wlc", "sed", "nq", "fo", "ovf"]      # leastconn.py merges and fills


@st.composite
def dest_tables(draw, max_rows=6, max_conns=6):
    n = draw(st.integers(0, max_rows))
    col = lambda elements: draw(st.lists(elements, min_size=n, max_size=n))  # noqa: E731
    weights = col(st.one_of(st.integers(0, 4), st.sampled_from([0, 1, 7, 100, 65535])))
    upper = col(st.sampled_from([0, 0, 0, 1, 2, 3, 5, 9, 40]))
    conns = st.one_of(st.integers(0, 6), st.integers(0, max_conns))
    active = col(conns)
    inact = col(conns)
    flags = col(st.sampled_from([DEST_F_AVAILABLE] * 3 + [DEST_F_AVAILABLE | DEST_F_OVERLOAD]))
    last = [w if w else draw(st.integers(0, 3)) for w in weights]
    return DestTable.build([BASE + i + 1 for i in range(n)], [80] * n, weights,
                           last_weight=last, activeconns=active, inactconns=inact,
                           flags=flags, u_threshold=upper)


@st.composite
def flow_batches(draw, max_flows=40):
    n = draw(st.integers(0, max_flows))
    col = lambda elements: draw(st.lists(elements, min_size=n, max_size=n))  # noqa: E731
    proto = col(st.sampled_from([6, 6, 17, 1]))
    saddr = col(st.integers(0, 7).map(lambda i: 0xC6126400 + i * 37))
    sport = col(st.integers(0, 3).map(lambda i: 40000 + i))
    daddr = col(st.integers(0, 3).map(lambda i: 0xC6123200 + i))
    return FlowBatch(np.array(proto, np.uint8), np.array(saddr, np.uint32),
                     np.array(sport, np.uint16), np.array(daddr, np.uint32),
                     np.full(n, 80, np.uint16))


@st.composite
def run_flows(draw, max_runs=4):
    """Flows in a few runs of one protocol each: TCP binds active, UDP/ICMP inactive."""
    runs = draw(st.lists(st.tuples(st.sampled_from([6, 17, 1]), st.integers(1, 90)),
                         min_size=1, max_size=max_runs))
    proto = np.concatenate([np.full(n, p, np.uint8) for p, n in runs])
    n = len(proto)
    return FlowBatch(proto, np.zeros(n, np.uint32), np.zeros(n, np.uint16),
                     np.zeros(n, np.uint32), np.zeros(n, np.uint16))


def zero_flows(n: int, saddr=None) -> FlowBatch:
    saddr = np.zeros(n, np.uint32) if saddr is None else saddr
    return FlowBatch(np.full(n, 6, np.uint8), saddr, np.zeros(n, np.uint16),
                     np.zeros(n, np.uint32), np.zeros(n, np.uint16))


def twins(name, dests, flags=()):
    params = {"seed": 7} if name == "twos" else {}
    if name in ("lblc", "lblcr"):
        params = {"created_s": 0.0, "expiration_s": 0.5}   # lblcr sets shrink mid-batch
    pair = [sched.create(name, flags=flags, **params) for _ in range(2)]
    for s in pair:
        s.dests_changed(dests)
    return pair


def warm_up(pair, dests, flows, now):
    """Drive both twins through the same sequential picks, binding each once."""
    for i in range(len(flows)):
        rows = {s.schedule(dests, flows[i], now) for s in pair}
        assert len(rows) == 1
        row = rows.pop()
        if row != NO_DEST:
            dests.bind(row, flows[i].proto == 6)


def assert_batch_equals_sequential(name, dests, warm, flows, flags=(), now=100.0):
    fast, slow = twins(name, dests, flags)
    warm_up((fast, slow), dests, warm, now - 1)
    before = dests.copy()
    got = fast.schedule_batch(dests, flows, now)
    want = BaseScheduler.schedule_batch(slow, dests, flows, now)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32 and len(got) == len(flows)
    for column in DestTable.COLUMNS:                # the batch never binds on the real table
        np.testing.assert_array_equal(getattr(dests, column), getattr(before, column))
    # the scheduler state after the batch matches too: the next picks agree
    more = BaseScheduler.schedule_batch(fast, dests, flows, now + 1)
    np.testing.assert_array_equal(more, BaseScheduler.schedule_batch(slow, dests, flows, now + 1))


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=50, deadline=None)
@given(dests=dest_tables(), warm=flow_batches(max_flows=6), flows=flow_batches(),
       flag_pick=st.integers(0, 3))
def test_batch_equals_sequential(name, dests, warm, flows, flag_pick):
    flags = FLAG_CHOICES.get(name, [()])[flag_pick % len(FLAG_CHOICES.get(name, [()]))]
    assert_batch_equals_sequential(name, dests, warm, flows, flags)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["rr", "wrr", "dh", "sh", "mh"]), dests=dest_tables(max_rows=8),
       warm=flow_batches(max_flows=10), flows=flow_batches(max_flows=80),
       flag_pick=st.integers(0, 3))
def test_vectorised_schedulers_more_rows(name, dests, warm, flows, flag_pick):
    choices = FLAG_CHOICES.get(name, [()])
    assert_batch_equals_sequential(name, dests, warm, flows, choices[flag_pick % len(choices)])


@pytest.mark.parametrize("path", ["runs", "runs-level", "heap"])
@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(LEAST), dests=dest_tables(max_rows=14, max_conns=3000),
       warm=flow_batches(max_flows=10), flows=st.one_of(run_flows(), flow_batches(max_flows=120)))
def test_least_connection_batches_every_path(path, name, dests, warm, flows):
    """lc/wlc/sed/nq through the vectorised runs (item grid or water level) and through
    the heap, fo/ovf through their fills: ties, weight 0, u_threshold reached mid-batch,
    TCP/UDP/ICMP runs and mixes, counters large enough for sed/nq to fall back."""
    run_cost = 10**9 if path == "heap" else 0
    grid = 0 if path == "runs-level" else leastconn.GRID_ITEMS
    with patch.object(leastconn, "RUN_COST", run_cost), patch.object(leastconn, "GRID_ITEMS", grid):
        assert_batch_equals_sequential(name, dests, warm, flows)


@pytest.mark.parametrize("name", ["lc", "wlc", "sed", "nq"])
def test_least_connection_merge_known_answers(name):
    """Equal loads pick in scan order; a u_threshold stops a server mid-batch."""
    dests = DestTable.build([BASE + i for i in range(3)], [80] * 3, [2, 2, 0],
                            u_threshold=[0, 2, 0])
    flows = zero_flows(6)
    s = sched.create(name)
    want = BaseScheduler.schedule_batch(s, dests, flows, 0.0)
    assert want.tolist() == [0, 1, 0, 1, 0, 0]            # row 1 OVERLOADed after 2 binds
    np.testing.assert_array_equal(s.schedule_batch(dests, flows, 0.0), want)


@SETTINGS
@given(weights=st.lists(st.integers(1, 8), min_size=1, max_size=6), cycles=st.integers(1, 3),
       edits=st.integers(0, 3))
def test_wrr_full_cycle_is_proportional_to_weights(weights, cycles, edits):
    dests = DestTable.build([BASE + i for i in range(len(weights))], [80] * len(weights),
                            weights)
    s = sched.create("wrr")
    s.dests_changed(dests)
    di = reduce(math.gcd, weights)
    period = sum(weights) // di
    flows = zero_flows(period * cycles)
    picks = s.schedule_batch(dests, flows, 0.0)
    counts = Counter(picks.tolist())
    assert {row: counts[row] for row in range(len(weights))} == \
        {row: w // di * cycles for row, w in enumerate(weights)}


@SETTINGS
@given(name=st.sampled_from(["dh", "sh", "mh"]), dests=dest_tables(), flows=flow_batches(),
       flag_pick=st.integers(0, 3))
def test_hash_schedulers_are_stable_while_servers_unchanged(name, dests, flows, flag_pick):
    choices = FLAG_CHOICES.get(name, [()])
    s = sched.create(name, flags=choices[flag_pick % len(choices)])
    s.dests_changed(dests)
    dests.u_threshold[:] = 0                         # no OVERLOAD changes mid-way
    first = s.schedule_batch(dests, flows, 0.0)
    dests.activeconns += 3                           # load does not move hashed flows
    again = s.schedule_batch(dests, flows, 50.0)
    np.testing.assert_array_equal(first, again)
    for i in range(len(flows)):
        assert s.schedule(dests, flows[i], 60.0) == first[i]


@settings(max_examples=12, deadline=None)
@given(n=st.integers(3, 12), gone=st.integers(0, 11), seed=st.integers(0, 2**16))
def test_mh_moves_about_one_nth_when_a_server_leaves(n, gone, seed):
    gone %= n
    dests = DestTable.build([BASE + 17 * i for i in range(n)], [80] * n, [1] * n)
    s = sched.create("mh")
    s.dests_changed(dests)
    flows = zero_flows(3000, np.random.default_rng(seed).integers(0, 2**32, 3000, np.uint32))
    before = dests.uid[s.schedule_batch(dests, flows, 0.0)]
    removed_uid = dests.uid[gone]
    dests.remove(gone)
    s.dests_changed(dests)
    after = dests.uid[s.schedule_batch(dests, flows, 0.0)]
    lost = before == removed_uid                     # flows that were on the removed server
    moved = before != after
    assert moved[lost].all()
    assert moved.mean() <= 1 / n + 0.05              # ≈ 1/N of all flows move
    assert moved[~lost].mean() <= 0.05               # the others nearly all stay
