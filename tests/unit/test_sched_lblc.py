"""lblc and lblcr: cache validity, deleted servers, and the 60 s GC timer."""

from __future__ import annotations

import pytest

from userlb import sched
from userlb.sched.base import NO_DEST, Flow
from userlb.sched.hashing import hash_32
from userlb.sched.locality import MAX_SIZE, LocalityTable
from userlb.services import DEST_F_OVERLOAD, DestTable

A, B, C = 0xC6120101, 0xC6120102, 0xC6120103
X, Y = 0xC6123201, 0xC6123202


def table(weights, **columns):
    return DestTable.build([A, B, C][:len(weights)], [80] * len(weights), weights, **columns)


def flow(daddr=X, saddr=0xC6126401):
    return Flow(6, saddr, 1000, daddr, 80)


def make(name, d, **params):
    s = sched.create(name, created_s=0.0, **params)
    s.dests_changed(d)
    return s


# -- lblc ------------------------------------------------------------------------------------
def test_lblc_cached_server_ignores_the_overload_flag():
    d = table([1, 1])
    s = make("lblc", d)
    assert s.schedule(d, flow(), 1.0) == 0
    d.flags[0] |= DEST_F_OVERLOAD
    assert s.schedule(d, flow(), 2.0) == 0          # cache path: flag not checked
    assert s.schedule(d, flow(Y), 2.0) == 1         # new key: wlc skips flagged A


def test_lblc_weight_zero_or_deleted_cached_server_is_replaced():
    d = table([1, 1, 1])
    s = make("lblc", d)
    assert s.schedule(d, flow(), 1.0) == 0
    d.edit(0, weight=0)
    assert s.schedule(d, flow(), 2.0) == 1
    d.remove(1)                                     # the cached B leaves: A(w0), C
    s.dests_changed(d)
    assert s.schedule(d, flow(), 3.0) == 1          # C


def test_lblc_entry_replacement_inflates_the_entry_count_like_the_kernel():
    d = table([1, 1])
    s = make("lblc", d)
    s.schedule(d, flow(), 1.0)
    d.edit(0, weight=0)
    s.schedule(d, flow(), 2.0)                      # replaced A → B
    assert len(s.table.entries) == 1
    assert s.table.count == 2                       # ip_vs_lblc_new: del without dec


def test_lblc_readded_server_is_revived_from_the_trash():
    d = table([1, 1])
    s = make("lblc", d)
    assert s.schedule(d, flow(), 1.0) == 0
    d.remove(0)
    s.dests_changed(d)
    d.add(A, 80, 1)                                 # same address and port again
    s.dests_changed(d)
    d.activeconns[1] = 0
    assert s.schedule(d, flow(), 2.0) == 0          # entry still points at A
    assert s.table.count == 1


def test_lblc_no_server_keeps_the_entry_and_refreshes_lastuse():
    d = table([1])
    s = make("lblc", d)
    s.schedule(d, flow(), 1.0)
    d.edit(0, weight=0)
    assert s.schedule(d, flow(), 5.0) == NO_DEST
    assert s.table.entries[X].lastuse == 5.0


@pytest.mark.parametrize("name", ["lblc", "lblcr"])
def test_full_sweep_every_30_ticks(name):
    d = table([1, 1])
    s = make(name, d, expiration_s=100.0)
    s.schedule(d, flow(), 10.0)
    s.expire(1799.0)
    assert X in s.table.entries                     # stale since 110 s, but no sweep yet
    s.expire(1800.0)                                # tick 30: full sweep
    assert X not in s.table.entries and s.table.count == 0
    assert s.table.counter == 1
    s.schedule(d, flow(), 1801.0)
    s.expire(3599.0)
    assert X in s.table.entries
    s.expire(3600.0)
    assert X not in s.table.entries


@pytest.mark.parametrize("name", ["lblc", "lblcr"])
def test_gc_runs_inside_schedule_too(name):
    d = table([1, 1])
    s, t = make(name, d, expiration_s=100.0), make(name, d, expiration_s=100.0)
    for sch in (s, t):
        sch.schedule(d, flow(), 10.0)
    s.expire(1800.0)
    assert s.schedule(d, flow(), 1800.0) == t.schedule(d, flow(), 1800.0)
    assert s.table.entries[X].lastuse == t.table.entries[X].lastuse == 1800.0


def test_gc_timer_anchors_at_first_now_without_created_s():
    s = sched.create("lblc")
    s.expire(1000.0)
    assert s.table.next_tick_s == 1060.0
    s.expire(1000.0 + 60 * 29)
    assert s.table.counter == 30


class Stamp:
    def __init__(self, lastuse):
        self.lastuse = lastuse


def test_partial_gc_when_over_max_size():
    t = LocalityTable(created_s=0.0)
    for i in range(MAX_SIZE + 300):
        t.entries[0xC6000000 + i] = Stamp(0.0 if i % 2 else 500.0)
    t.count = len(t.entries)
    t.advance(60.0 * 20)                            # ticks 1..20: partial GC, counter kept
    goal = 300 * 4 // 3
    # tick 6 (t = 360 s) finds the old entries idle >= 360 s; ticks 7..20 count up
    assert t.counter == 15
    removed = MAX_SIZE + 300 - len(t.entries)
    # reference: stale entries per bucket, walked from bucket rover+1 = 1 until goal met
    stale = [0] * 1024
    for i in range(1, MAX_SIZE + 300, 2):
        stale[hash_32(0xC6000000 + i, 10)] += 1
    total, bucket = 0, 0
    while total < goal:
        bucket += 1
        total += stale[bucket]
    assert (removed, t.rover) == (total, bucket)
    assert t.count == len(t.entries) <= MAX_SIZE
    t.advance(60.0 * 21)
    assert t.counter == 16                           # back under max_size: counting


def test_quiet_ticks_are_skipped_arithmetically():
    t = LocalityTable(created_s=0.0)
    t.entries[1] = Stamp(0.0)
    t.count = 1
    t.advance(86400.0 * 365)                         # one year of ticks, quickly
    assert 1 not in t.entries
    assert t.ticks == 365 * 1440


# -- lblcr -----------------------------------------------------------------------------------
def _members(s, daddr=X):
    return [[A, B, C].index(m.key[0]) for m in s.table.entries[daddr].members]


def test_lblcr_insert_of_existing_member_keeps_lastmod():
    d = table([1, 1])
    s = make("lblcr", d)
    assert s.schedule(d, flow(), 1.0) == 0
    en = s.table.entries[X]
    d.activeconns[:] = [2, 0]                       # A "overloaded": wlc → B, joins the set
    assert s.schedule(d, flow(), 2.0) == 1 and en.lastmod == 2.0
    d.activeconns[:] = [2, 5]                       # B weighted min? A 512 < B 1280: A
    d.weight[:] = [1, 1]
    assert s.schedule(d, flow(), 3.0) == 0          # A: 2 > 1, but nobody under half → A
    assert _members(s) == [1, 0] and en.lastmod == 2.0


def test_lblcr_set_min_skips_deleted_members_set_max_still_weighs_them():
    d = table([1, 1, 1])
    s = make("lblcr", d, expiration_s=100.0)
    s.schedule(d, flow(), 1.0)                      # [A]
    d.activeconns[:] = [2, 0, 0]
    s.schedule(d, flow(), 2.0)                      # [B, A]
    d.activeconns[:] = [9, 0, 0]
    s.schedule(d, flow(), 3.0)                      # refresh A's snapshot: 9 active
    d.remove(0)                                     # A leaves; the set still holds it
    s.dests_changed(d)
    d.activeconns[:] = [0, 0]
    assert s.schedule(d, flow(), 50.0) == 0         # B (row 0 now)
    assert _members(s) == [1, 0]
    assert s.schedule(d, flow(), 200.0) == 0        # > lastmod + 100: erase set_max = A
    assert _members(s) == [1]


def test_lblcr_no_usable_member_falls_back_to_wlc_and_grows():
    d = table([1, 1, 1])
    s = make("lblcr", d)
    s.schedule(d, flow(), 1.0)
    d.edit(0, weight=0)
    assert s.schedule(d, flow(), 2.0) == 1
    assert _members(s) == [1, 0]
    d.weight[:] = 0
    assert s.schedule(d, flow(), 3.0) == NO_DEST
