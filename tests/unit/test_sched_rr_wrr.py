"""rr and wrr: cursor handling, build order, failure states, and a literal model.

The models below transcribe ip_vs_rr.c / ip_vs_wrr.c onto a Python list of
server objects (the kernel's dest list, head first) with no shortcuts; random
add/delete/edit/overload/schedule sequences must give identical picks.
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userlb import sched
from userlb.sched.base import NO_DEST, Flow, FlowBatch
from userlb.services import DEST_F_OVERLOAD, DestTable

FLOW = Flow(6, 0xC6126401, 1000, 0xC6120001, 80)
HEAD = "head"


def table(weights, **columns):
    return DestTable.build([0xC6120101 + i for i in range(len(weights))], [80] * len(weights),
                           weights, **columns)


def run(s, d, n):
    return [s.schedule(d, FLOW, 0.0) for _ in range(n)]


# -- rr --------------------------------------------------------------------------------------
def test_rr_deleting_the_cursor_continues_with_its_successor():
    d = table([1, 1, 1])                            # A B C
    s = sched.create("rr")
    s.dests_changed(d)
    assert run(s, d, 2) == [0, 1]                   # cursor on B
    d.remove(1)
    s.dests_changed(d)                              # cursor → A (B's predecessor)
    assert run(s, d, 3) == [1, 0, 1]                # C A C


def test_rr_deleting_the_first_entry_under_the_cursor_restarts_at_head():
    d = table([1, 1, 1])
    s = sched.create("rr")
    s.dests_changed(d)
    assert run(s, d, 1) == [0]
    d.remove(0)
    s.dests_changed(d)
    assert s.cursor is None
    assert run(s, d, 3) == [0, 1, 0]                # B C B


def test_rr_adding_does_not_move_the_cursor():
    d = table([1, 1, 1])
    s = sched.create("rr")
    s.dests_changed(d)
    assert run(s, d, 2) == [0, 1]
    d.add(0xC6120109, 80)                           # D goes to the head: D A B C
    s.dests_changed(d)
    assert run(s, d, 4) == [3, 0, 1, 2]             # C D A B


def test_rr_repairs_a_cursor_removed_without_dests_changed():
    d = table([1, 1, 1])
    s = sched.create("rr")
    s.dests_changed(d)
    run(s, d, 2)
    d.remove(1)
    assert run(s, d, 1) == [1]                      # C, as if del_dest had run


def test_rr_batch_falls_back_when_a_threshold_trips_mid_batch():
    d = table([1, 1, 1], u_threshold=[2, 0, 0])
    s = sched.create("rr")
    s.dests_changed(d)
    got = s.schedule_batch(d, FlowBatch.from_flows([FLOW] * 8), 0.0)
    assert got.tolist() == [0, 1, 2, 0, 1, 2, 1, 2]  # A overloaded after its 2nd connection
    assert d.activeconns.tolist() == [0, 0, 0]      # the real table is untouched


class RRModel:
    """ip_vs_rr.c on a list; `cur` is a dest object or HEAD."""

    def __init__(self):
        self.cur = HEAD

    def del_dest(self, dests, victim):
        if self.cur is victim:
            i = dests.index(victim)
            self.cur = dests[i - 1] if i > 0 else HEAD

    def schedule(self, dests):
        p = last = dest = self.cur
        passes = 0
        while True:
            start = 0 if dest is HEAD else dests.index(dest) + 1
            for dest in dests[start:]:
                if not dest["over"] and dest["w"] > 0:
                    self.cur = dest
                    return dest
                if dest is last:
                    return None
            passes += 1
            dest = HEAD
            if not (passes < 2 and p is not HEAD):
                return None


class WRRModel:
    """ip_vs_wrr.c on a list, without any shortcut."""

    def __init__(self, dests):
        self.cl = HEAD
        self.cw = 0
        self.changed(dests)
        self.cw = self.mw                           # init_service

    def changed(self, dests):
        self.cl = HEAD
        positive = [d["w"] for d in dests if d["w"] > 0]
        self.di = reduce(math.gcd, positive) if positive else 1
        self.mw = max([d["w"] for d in dests], default=0) - (self.di - 1)
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def schedule(self, dests):
        dest = self.cl
        if self.mw == 0:
            return None
        last, stop, last_pass, restarted = dest, None, False, False
        while True:
            start = 0 if dest is HEAD else dests.index(dest) + 1
            for dest in dests[start:]:
                if not dest["over"] and dest["w"] >= self.cw:
                    self.cl = dest
                    return dest
                if dest is stop:
                    self.cl = dest
                    return None
            dest = HEAD
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last is HEAD:
                    self.cl = HEAD
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last is not HEAD:
                stop = last


OPS = st.lists(st.tuples(st.sampled_from(["add", "del", "edit", "over", "pick", "pick", "pick"]),
                         st.integers(0, 7), st.sampled_from([0, 1, 2, 3, 4, 6, 9, 40])),
               max_size=40)


def _drive(name, initial, ops):
    d = table(initial)
    model_dests = [{"uid": int(u), "w": w, "over": False} for u, w in zip(d.uid, initial)]
    s = sched.create(name)
    s.dests_changed(d)
    model = RRModel() if name == "rr" else WRRModel(model_dests)
    for op, i, w in ops:
        n = len(model_dests)
        if op == "add":
            d.add(0xC6120200 + len(d) + i, 80, w)
            model_dests.insert(0, {"uid": int(d.uid[0]), "w": w, "over": False})
        elif op in ("del", "edit", "over") and n:
            i %= n
            if op == "del":
                if name == "rr":
                    model.del_dest(model_dests, model_dests[i])
                del model_dests[i]
                d.remove(i)
            elif op == "edit":
                model_dests[i]["w"] = w
                d.edit(i, weight=w)
            else:
                model_dests[i]["over"] = not model_dests[i]["over"]
                d.flags[i] ^= DEST_F_OVERLOAD
                continue                            # OVERLOAD is no dest edit: no hook
        elif op == "pick":
            want = model.schedule(model_dests)
            got = s.schedule(d, FLOW, 0.0)
            assert got == (NO_DEST if want is None else model_dests.index(want))
            continue
        else:
            continue
        if name == "wrr":
            model.changed(model_dests)
        s.dests_changed(d)
        if name == "wrr":
            assert (s.cw, s.mw, s.di, s.cl) == (model.cw, model.mw, model.di, None)


@settings(max_examples=80, deadline=None)
@given(initial=st.lists(st.sampled_from([0, 1, 2, 3, 4, 6]), max_size=5), ops=OPS)
def test_rr_matches_literal_kernel_model(initial, ops):
    _drive("rr", initial, ops)


@settings(max_examples=80, deadline=None)
@given(initial=st.lists(st.sampled_from([0, 1, 2, 3, 4, 6, 40]), max_size=5), ops=OPS)
def test_wrr_matches_literal_kernel_model(initial, ops):
    _drive("wrr", initial, ops)


# -- wrr -------------------------------------------------------------------------------------
def test_wrr_fail_from_head_resets_cw_to_mw():
    d = table([2, 1], flags=[3, 3])
    s = sched.create("wrr")
    s.dests_changed(d)
    assert run(s, d, 1) == [NO_DEST]
    assert (s.cl, s.cw, s.mw) == (None, 2, 2)


def test_wrr_all_weights_zero_keeps_cursor():
    d = table([1, 1])
    s = sched.create("wrr")
    s.dests_changed(d)
    run(s, d, 1)
    cl = s.cl
    d.weight[:] = 0                                 # mw stays 1 until dests_changed
    d.edit(0, weight=0)
    s.dests_changed(d)
    assert s.mw == 0 and run(s, d, 2) == [NO_DEST, NO_DEST]
    assert cl is not None and s.cl is None          # dests_changed moved it to the head


def test_wrr_dest_changed_rounds_cw_to_the_new_step():
    d = table([4, 3, 2])
    s = sched.create("wrr")
    s.dests_changed(d)
    run(s, d, 4)                                    # A A B A, cw = 2
    d.edit(1, weight=2)                             # 4, 2, 2: di = 2, mw = 3
    s.dests_changed(d)
    assert (s.di, s.mw, s.cw) == (2, 3, 3)
    assert run(s, d, 6) == [0, 0, 1, 2, 0, 0]


def test_wrr_skips_empty_passes_when_the_heavy_server_is_overloaded():
    d = table([65535, 1], flags=[3, 1])
    s = sched.create("wrr")
    s.dests_changed(d)
    assert run(s, d, 3) == [1, 1, 1]
    assert s.cw == 1


def test_wrr_batch_with_a_huge_period_uses_the_loop():
    d = table([65535 - i for i in range(20)])
    s = sched.create("wrr")
    s.dests_changed(d)
    twin = sched.create("wrr")
    twin.dests_changed(d)
    flows = FlowBatch.from_flows([FLOW] * 30)
    assert s._period_keys(d) is None
    got = s.schedule_batch(d, flows, 0.0)
    assert got.tolist() == run(twin, d, 30)


@pytest.mark.parametrize("weights", [[3, 0, 2], [5, 5, 5], [1]])
def test_wrr_batch_continues_mid_cycle(weights):
    d = table(weights)
    s, twin = sched.create("wrr"), sched.create("wrr")
    for x in (s, twin):
        x.dests_changed(d)
    for size in (1, 2, 5, 3):
        got = s.schedule_batch(d, FlowBatch.from_flows([FLOW] * size), 0.0)
        assert got.tolist() == run(twin, d, size)
        assert (s.cl, s.cw) == (twin.cl, twin.cw)
    assert np.all(got >= 0)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("weights, warm, cl, cw", [
    ([4, 3, 2], 4, None, 4),        # from A at cw=2: full pass at cw=1 fails, cl = head
    ([2, 2], 1, 0, 1),              # cw <= di: restart, stop at A, cl stays A
    ([4, 2], 3, 1, 1),              # restart then last pass stops at B
    ([2, 1], 3, 1, 1),              # di = 1: restart, skipped passes, stop at B
])
def test_wrr_failure_states_after_everything_overloads(weights, warm, cl, cw):
    d = table(weights)
    s = sched.create("wrr")
    s.dests_changed(d)
    run(s, d, warm)
    d.flags |= DEST_F_OVERLOAD
    assert run(s, d, 1) == [NO_DEST]
    assert s.cl == (None if cl is None else int(d.uid[cl])) and s.cw == cw
    assert run(s, d, 2) == [NO_DEST, NO_DEST]       # and it terminates again from there
