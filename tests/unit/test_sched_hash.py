"""Hash primitives (scalar vs numpy) and dh/sh/mh details beyond §6."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userlb import sched
from userlb.sched import hashing
from userlb.sched.base import NO_DEST, Flow, FlowBatch
from userlb.services import DEST_F_OVERLOAD, DestTable

U32 = st.integers(0, 2**32 - 1)


def table(weights, **columns):
    n = len(weights)
    return DestTable.build([0xC6120101 + i for i in range(n)], [80] * n, weights, **columns)


def make(name, d, flags=()):
    s = sched.create(name, flags=flags)
    s.dests_changed(d)
    return s


@settings(max_examples=60, deadline=None)
@given(values=st.lists(U32, min_size=1, max_size=20), bits=st.sampled_from([8, 10, 32 - 1]))
def test_hash_32_array_matches_scalar(values, bits):
    got = hashing.hash_32_array(np.array(values, np.uint32), bits)
    assert got.tolist() == [hashing.hash_32(v, bits) for v in values]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.tuples(U32, st.integers(0, 65535), st.integers(0, 4092)),
                       min_size=1, max_size=20))
def test_sh_and_mh_hash_arrays_match_scalar(values):
    addrs, ports, offsets = (np.array(c, np.int64) for c in zip(*values))
    assert hashing.sh_hash_array(addrs, ports).tolist() == \
        [hashing.sh_hash(a, p) for a, p, _ in values]
    assert hashing.mh_hash_array(addrs, ports, hashing.MH_HASH2, offsets).tolist() == \
        [hashing.mh_hash(a, p, hashing.MH_HASH2, o) for a, p, o in values]


def test_sh_and_mh_sums_wrap_at_32_bits():
    assert hashing.sh_hash(0xFFFFFFFF, 2) == hashing.sh_hash(1, 0)
    assert hashing.mh_hash(0xFFFFFFFF, 2, hashing.MH_HASH1) == \
        hashing.mh_hash(1, 0, hashing.MH_HASH1)


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=24), k0=st.integers(0, 2**64 - 1), k1=st.integers(0, 2**64 - 1))
def test_hsiphash_u32_array_matches_scalar(data, k0, k1):
    value = int.from_bytes(data[:4].ljust(4, b"\0"), "little")
    assert hashing.hsiphash_u32_array(np.array([value]), (k0, k1)).tolist() == \
        [hashing.hsiphash(value.to_bytes(4, "little"), (k0, k1))]
    assert 0 <= hashing.hsiphash(data, (k0, k1)) < 2**32


# -- flags -----------------------------------------------------------------------------------
def test_flag_names_and_compatibility():
    assert sched.create("sh", flags=("sh-port", "sh-fallback")).fallback
    assert sched.create("mh", flags=("flag-2",)).use_port     # the raw bit name works too
    with pytest.raises(ValueError, match="incompatible"):
        sched.create("mh", flags=("sh-port",))
    with pytest.raises(ValueError, match="unknown"):
        sched.create("sh", flags=("sh-ports",))


def test_port_only_used_for_tcp_udp_sctp():
    d = table([1, 1, 1, 1, 1, 1, 1])
    s = make("sh", d, flags=("sh-port",))
    icmp = [s.schedule(d, Flow(1, 0xC6126401, p, 1, 0), 0.0) for p in range(50)]
    assert len(set(icmp)) == 1
    udp = [s.schedule(d, Flow(17, 0xC6126401, p, 1, 0), 0.0) for p in range(50)]
    assert len(set(udp)) > 1


# -- dh --------------------------------------------------------------------------------------
def test_dh_ignores_weights_in_the_table_but_not_weight_zero():
    d = table([1, 50, 3])
    s = make("dh", d)
    assert "".join("ABC"[r] for r in s.table.rows(d)[:6]) == "ABCABC"
    flows = FlowBatch.from_flows([Flow(6, 1, 1, 0xC6120001 + i, 80) for i in range(64)])
    before = s.schedule_batch(d, flows, 0.0)
    d.edit(1, weight=0)
    s.dests_changed(d)
    after = s.schedule_batch(d, flows, 0.0)
    assert np.array_equal(after[before != 1], before[before != 1])
    assert (after[before == 1] == NO_DEST).all()                # no fallback in dh


def test_dh_empty_service():
    d = DestTable()
    s = make("dh", d)
    assert s.schedule(d, Flow(6, 1, 1, 1, 80), 0.0) == NO_DEST


def test_dh_rows_follow_uids_after_adds():
    d = table([1, 1])
    s = make("dh", d)
    d.add(0xC6120109, 80)                                       # shifts every row by one
    s.dests_changed(d)
    assert "".join("DAB"[r] for r in s.table.rows(d)[:6]) == "DABDAB"


# -- sh --------------------------------------------------------------------------------------
def test_sh_weights_over_256_fill_the_table_with_the_first_server():
    d = table([300, 1])
    assert set(make("sh", d).table.rows(d).tolist()) == {0}


def test_sh_fallback_with_every_server_unavailable_is_null():
    d = table([1, 1], flags=[3, 3])
    s = make("sh", d, flags=("sh-fallback",))
    assert s.schedule(d, Flow(6, 5, 5, 5, 80), 0.0) == NO_DEST
    flows = FlowBatch.from_flows([Flow(6, i, 5, 5, 80) for i in range(10)])
    assert (s.schedule_batch(d, flows, 0.0) == NO_DEST).all()


def test_sh_table_rebuilds_on_edit():
    d = table([1, 1])
    s = make("sh", d)
    d.edit(0, weight=3)
    s.dests_changed(d)
    assert "".join("AB"[r] for r in s.table.rows(d)[:8]) == "AAABAAAB"


# -- mh --------------------------------------------------------------------------------------
def test_mh_all_last_weights_zero_empties_the_table():
    d = table([0, 0], last_weight=[0, 0])
    s = make("mh", d, flags=("mh-fallback",))
    assert (s.table.rows(d) == -1).all()
    assert s.schedule(d, Flow(6, 1, 1, 1, 80), 0.0) == NO_DEST


def test_mh_more_servers_than_slots_keeps_the_old_table():
    d = table([1, 1])
    s = make("mh", d)
    before = s.table.table_uids.copy()
    big = DestTable.build(list(range(4094)), [80] * 4094, [1] * 4094)
    s.dests_changed(big)
    assert np.array_equal(s.table.table_uids, before)


def test_mh_fallback_when_only_some_slots_are_usable():
    d = table([1, 1, 1, 1], flags=[3, 3, 3, 1])
    s = make("mh", d, flags=("mh-fallback",))
    flows = FlowBatch.from_flows([Flow(6, 0xC6126400 + i, 0, 1, 80) for i in range(40)])
    got = s.schedule_batch(d, flows, 0.0)
    assert (got == 3).all()
    assert [s.schedule(d, flows[i], 0.0) for i in range(40)] == got.tolist()


def test_mh_table_depends_only_on_server_list_and_last_weights():
    d1, d2 = table([1, 2, 3]), table([1, 2, 3])
    assert np.array_equal(make("mh", d1).table.rows(d1), make("mh", d2).table.rows(d2))
    d1.edit(1, weight=0)                                        # quiesce: last_weight stays 2
    s = make("mh", d1)
    assert np.array_equal(s.table.rows(d1), make("mh", d2).table.rows(d2))
    assert d1.flags[1] & DEST_F_OVERLOAD == 0
