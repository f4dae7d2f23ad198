"""Every worked example of spec/ipvs.md §6.1–6.14, scheduler by scheduler.

Servers A, B, C = 198.18.1.1-3:80 in scan order A, B, C unless stated; "pick
then active += 1" is DestTable.bind(row, active=True) after each pick.
"""

from __future__ import annotations

import numpy as np
import pytest

from userlb import sched
from userlb.sched.base import NO_DEST, Flow
from userlb.sched.hashing import MH_HASH1, MH_HASH2, hash_32, hsiphash, mh_hash
from userlb.services import DEST_F_OVERLOAD, DestTable, ip_to_int

A, B, C = (ip_to_int(f"198.18.1.{i}") for i in (1, 2, 3))
NAMES = "ABC"
TCP, UDP = 6, 17


def table(weights, **columns) -> DestTable:
    n = len(weights)
    return DestTable.build([A, B, C][:n], [80] * n, weights, **columns)


def make(name, dests, flags=(), **params):
    s = sched.create(name, flags=flags, **params)
    s.dests_changed(dests)
    return s


def picks(s, dests, n, flow=None, now=0.0, bind=True) -> str:
    flow = flow or Flow(TCP, ip_to_int("198.18.100.1"), 1000, ip_to_int("198.18.0.1"), 80)
    out = []
    for _ in range(n):
        row = s.schedule(dests, flow, now)
        out.append("-" if row == NO_DEST else NAMES[row])
        if row != NO_DEST and bind:
            dests.bind(row, flow.proto == TCP)
    return "".join(out)


def client(last_octet: str, port: int = 0, proto: int = TCP) -> Flow:
    return Flow(proto, ip_to_int(f"198.18.{last_octet}"), port, ip_to_int("198.18.0.1"), 80)


# -- 6.1 rr ---------------------------------------------------------------------------------
def test_6_1_rr_cycle_then_quiesce_b():
    d = table([1, 1, 1])
    s = make("rr", d)
    assert picks(s, d, 7) == "ABCABCA"
    d.edit(1, weight=0)
    s.dests_changed(d)
    assert picks(s, d, 4) == "CACA"


def test_6_1_rr_empty_or_all_zero_is_null():
    empty = DestTable()
    assert picks(make("rr", empty), empty, 2) == "--"
    d = table([0, 0, 0])
    assert picks(make("rr", d), d, 2) == "--"


# -- 6.2 wrr --------------------------------------------------------------------------------
@pytest.mark.parametrize("weights, expected", [
    ([4, 3, 2], "AABABCABC" * 2),
    ([4, 2], "AABAAB"),
    ([6, 4, 2], "AABABC" * 2),
])
def test_6_2_wrr_bound_to_existing_servers(weights, expected):
    d = table(weights)
    assert picks(make("wrr", d), d, len(expected), bind=False) == expected


def _wrr_built_ipvsadm_way(weights):
    d, s = DestTable(), sched.create("wrr")
    s.dests_changed(d)                                  # -A -s wrr: empty service
    for addr, w in reversed(list(zip([A, B, C], weights))):
        d.add(addr, 80, w)                              # -a C, then B, then A
        s.dests_changed(d)
    return d, s


@pytest.mark.parametrize("weights, expected", [
    ([4, 3, 2], "ABC" + "AABABCABC" + "AAB"),
    ([6, 4, 2], "ABC" + "AABABC" + "AAB"),
    ([4, 2], "ABAABAAB"),
])
def test_6_2_wrr_built_ipvsadm_way(weights, expected):
    d, s = _wrr_built_ipvsadm_way(weights)
    assert picks(s, d, len(expected), bind=False) == expected


def test_6_2_wrr_edit_mid_cycle():
    d = table([4, 3, 2])
    s = make("wrr", d)
    assert picks(s, d, 4, bind=False) == "AABA"
    assert s.cw == 2
    d.edit(2, weight=5)
    s.dests_changed(d)
    assert (s.di, s.mw, s.cw, s.cl) == (1, 5, 2, None)
    assert picks(s, d, 12, bind=False) == "ABCABCCACABC"


def test_6_2_wrr_all_overloaded_is_null():
    d = table([2, 1], flags=[1 | DEST_F_OVERLOAD] * 2)
    assert picks(make("wrr", d), d, 3) == "---"


# -- 6.3 lc ---------------------------------------------------------------------------------
def test_6_3_lc_counts_inactive_as_1_256():
    d = table([1, 1, 5], activeconns=[1, 0, 0], inactconns=[0, 300, 0])
    assert picks(make("lc", d), d, 6) == "CACBAC"
    assert d.activeconns.tolist() == [3, 1, 3]
    assert d.inactconns.tolist() == [0, 300, 0]


def test_6_3_lc_ignores_weights_except_zero():
    d = table([0, 3, 1])
    assert picks(make("lc", d), d, 5) == "BCBCB"


# -- 6.4 wlc --------------------------------------------------------------------------------
def test_6_4_wlc_weights_1_2_3():
    d = table([1, 2, 3])
    assert picks(make("wlc", d), d, 12) == "ABCCBCABCCBC"
    assert d.activeconns.tolist() == [2, 4, 6]


def test_6_4_wlc_inactive_tips_the_first_pick():
    d = table([2, 1], activeconns=[2, 1], inactconns=[10, 0])
    assert picks(make("wlc", d), d, 4) == "BAAB"


# -- 6.5 sed vs wlc, 6.6 nq -----------------------------------------------------------------
def test_6_5_sed_versus_wlc():
    d = table([1, 4])
    assert picks(make("sed", d), d, 6) == "BBBABB"
    d = table([1, 4])
    assert picks(make("wlc", d), d, 6) == "ABBBBA"


def test_6_6_nq_idle_first_then_expected_delay():
    d = table([1, 4, 2])
    assert picks(make("nq", d), d, 8) == "ABCBBBCB"


# -- 6.7 fo, 6.8 ovf ------------------------------------------------------------------------
def test_6_7_fo_highest_weight_earliest_on_tie():
    d = table([5, 10, 10])
    s = make("fo", d)
    assert picks(s, d, 1) == "B"
    d.flags[1] |= DEST_F_OVERLOAD
    assert picks(s, d, 1, bind=False) == "C"
    d.edit(2, weight=0)
    assert picks(s, d, 1, bind=False) == "A"


def test_6_8_ovf_weight_plus_one_then_null():
    d = table([2, 3, 1])
    assert picks(make("ovf", d), d, 10) == "BBBBAAACC-"


# -- 6.9 twos -------------------------------------------------------------------------------
class Draws:
    """Stands in for random.Random: getrandbits returns the queued values."""

    def __init__(self, *values):
        self.values = list(values)

    def getrandbits(self, bits):
        return self.values.pop(0)


@pytest.mark.parametrize("r1, r2, expected", [
    (4, 2, "B"), (2, 4, "B"), (5, 6, "C"), (0, 6, "A"), (6, 0, "A"),
    (0, 0, "A"), (1, 1, "A"), (2, 2, "B"), (3, 3, "B"), (4, 4, "C"), (5, 5, "C"), (6, 6, "C"),
])
def test_6_9_twos(r1, r2, expected):
    d = table([1, 2, 3], activeconns=[0, 1, 3])
    s = make("twos", d, rng=Draws(r1, r2))
    assert picks(s, d, 1, bind=False) == expected


# -- 6.10 lblc, 6.11 lblcr ------------------------------------------------------------------
def test_6_10_lblc():
    d = table([2, 2])
    s = make("lblc", d, created_s=0.0)
    x, y = client("0.1"), client("0.2")
    x = Flow(TCP, x.saddr, 1, ip_to_int("198.18.50.1"), 80)
    y = Flow(TCP, y.saddr, 1, ip_to_int("198.18.50.2"), 80)
    got = [picks(s, d, 1, flow=f) for f in (x, x, x, x, x, y, x)]
    assert "".join(got) == "AAABBBB"
    assert d.activeconns.tolist() == [3, 4]


def _lblcr_five_picks(times):
    d = table([1, 1, 1])
    s = make("lblcr", d, created_s=0.0)
    x = Flow(TCP, ip_to_int("198.18.100.1"), 1, ip_to_int("198.18.50.1"), 80)
    got = "".join(picks(s, d, 1, flow=x, now=t) for t in times)
    return d, s, x, got


def _members(s, daddr):
    return [NAMES[[A, B, C].index(m.key[0])] for m in s.table.entries[daddr].members]


def test_6_11_lblcr_grows_then_shrinks_after_24h():
    d, s, x, got = _lblcr_five_picks([10, 11, 12, 13, 14])
    assert got == "AABBC"
    assert _members(s, x.daddr) == ["C", "B", "A"]
    d.activeconns[:] = 0                                # every connection closed
    assert picks(s, d, 1, flow=x, now=14 + 86400 + 1, bind=False) == "C"
    assert _members(s, x.daddr) == ["B", "A"]
    assert s.table.entries[x.daddr].lastmod == 14 + 86400 + 1


def test_6_11_lblcr_entry_swept_by_full_gc():
    d, s, x, got = _lblcr_five_picks([0, 0, 0, 0, 0])
    assert got == "AABBC"
    d.activeconns[:] = 0
    assert picks(s, d, 1, flow=x, now=86401, bind=False) == "A"
    assert _members(s, x.daddr) == ["A"]


# -- 6.12 hash_32 / dh ----------------------------------------------------------------------
@pytest.mark.parametrize("addr, bits, expected", [
    ("198.18.100.1", 8, 17), ("198.18.100.2", 8, 115), ("198.18.0.1", 8, 188),
    ("198.18.200.7", 8, 176), ("198.18.100.1", 10, 68), ("198.18.100.2", 10, 460),
])
def test_6_12_hash_32(addr, bits, expected):
    assert hash_32(ip_to_int(addr), bits) == expected


def test_6_12_hash_32_product():
    assert (0xC6126401 * 0x61C88647) & 0xFFFFFFFF == 0x113A4247
    assert (0xC6126402 * 0x61C88647) & 0xFFFFFFFF == 0x7302C88E


@pytest.mark.parametrize("daddr, expected", [
    ("198.18.0.1", "C"), ("198.18.100.1", "C"), ("198.18.100.2", "B"), ("198.18.200.7", "C"),
])
def test_6_12_dh(daddr, expected):
    d = table([1, 1, 1])
    s = make("dh", d)
    flow = Flow(TCP, ip_to_int("198.18.5.5"), 1, ip_to_int(daddr), 80)
    assert picks(s, d, 1, flow=flow) == expected


# -- 6.13 sh --------------------------------------------------------------------------------
def _sh(flags=(), weights=(1, 2, 1)):
    d = table(list(weights))
    return d, make("sh", d, flags=flags)


def test_6_13_sh_table_and_lookups():
    d, s = _sh()
    rows = s.table.rows(d)
    assert "".join(NAMES[r] for r in rows[:8]) == "ABBCABBC"
    got = "".join(picks(s, d, 1, flow=client(f"100.{i}", 1234)) for i in (1, 2, 3, 4))
    assert got == "BCAB"


def test_6_13_sh_port():
    d, s = _sh(flags=("sh-port",))
    got = "".join(picks(s, d, 1, flow=client(f"100.{i}", 40000)) for i in (1, 2, 3, 4))
    assert got == "BBAB"
    from userlb.sched.hashing import sh_hash
    assert [sh_hash(ip_to_int(f"198.18.100.{i}"), 40001) for i in (1, 2, 3, 4)] == \
        [22, 120, 218, 60]
    assert [sh_hash(ip_to_int(f"198.18.100.{i}"), 40000) for i in (1, 2, 3, 4)] == \
        [181, 22, 120, 218]


def test_6_13_sh_overloaded_b_and_fallback():
    d, s = _sh()
    d.flags[1] |= DEST_F_OVERLOAD
    assert picks(s, d, 1, flow=client("100.1")) == "-"
    d, s = _sh(flags=("sh-fallback",))
    d.flags[1] |= DEST_F_OVERLOAD
    assert picks(s, d, 1, flow=client("100.1")) == "C"     # buckets 34 (B) then 35


def test_6_13_sh_b_weight_0_rebuilds():
    d, s = _sh()
    d.edit(1, weight=0)
    s.dests_changed(d)
    assert "".join(NAMES[r] for r in s.table.rows(d)[:6]) == "ABCABC"
    got = "".join(picks(s, d, 1, flow=client(f"100.{i}")) for i in (1, 2, 3, 4))
    assert got == "C-CA"
    d, s = _sh(flags=("sh-fallback",))
    d.edit(1, weight=0)
    s.dests_changed(d)
    assert picks(s, d, 1, flow=client("100.2")) == "C"


# -- 6.14 hsiphash and mh -------------------------------------------------------------------
@pytest.mark.parametrize("n, expected", [
    (0, 0x050FC4DC), (1, 0x7D57CA93), (2, 0x4DC7D44D), (3, 0xE7DDF7FB), (4, 0x88D38328),
    (8, 0x8D299A8E), (16, 0x7D908B66),
])
def test_6_14_hsiphash_known_answers(n, expected):
    key = (0x0706050403020100, 0x0F0E0D0C0B0A0908)
    assert hsiphash(bytes(range(n)), key) == expected


@pytest.mark.parametrize("addr, h1, offset, h2, skip", [
    (A, 0x25FB90AE, 303, 0xE40AFFD4, 217),
    (B, 0x830491C6, 1852, 0x439D3BED, 1910),
    (C, 0xDF4884D4, 2630, 0x06EF5BEA, 2095),
])
def test_6_14_mh_permutation_inputs(addr, h1, offset, h2, skip):
    assert mh_hash(addr, 80, MH_HASH1) == h1 and h1 % 4093 == offset
    assert mh_hash(addr, 80, MH_HASH2) == h2 and h2 % 4092 + 1 == skip


LOOKUPS = ["100.1", "100.2", "100.3", "100.4", "200.7"]


def _mh(weights=(1, 1, 1), flags=()):
    d = table(list(weights))
    return d, make("mh", d, flags=flags)


def _lookups(s, d, port=0):
    return "".join(picks(s, d, 1, flow=client(c, port), bind=False) for c in LOOKUPS)


def test_6_14_mh_equal_weights():
    d, s = _mh()
    rows = s.table.rows(d)
    assert np.bincount(rows).tolist() == [1365, 1364, 1364]
    assert "".join(NAMES[r] for r in rows[:12]) == "ACACAAAABABA"
    assert mh_hash(ip_to_int("198.18.100.1"), 0, MH_HASH1) == 0x5532C04E
    assert [mh_hash(ip_to_int(f"198.18.{c}"), 0, MH_HASH1) % 4093 for c in LOOKUPS] == \
        [3279, 2421, 2661, 1299, 2700]
    assert _lookups(s, d) == "CCBBC"


def test_6_14_mh_weights_1_2_1():
    d, s = _mh((1, 2, 1))
    assert np.bincount(s.table.rows(d)).tolist() == [1024, 2046, 1023]
    assert _lookups(s, d) == "CCBBC"


def test_6_14_mh_b_deleted():
    d, s = _mh()
    before = s.table.rows(d).copy()
    d.remove(1)
    s.dests_changed(d)
    after = s.table.rows(d)
    assert np.bincount(after).tolist() == [2047, 2046]
    kept = before != 1
    moved = np.where(before[kept] == 2, 1, 0) != after[kept]
    assert int(moved.sum()) == 5                     # only 5 of A's or C's slots change owner
    assert "".join("AC"[r] for r in (s.schedule(d, client(c), 0) for c in LOOKUPS)) == "CCACC"


def test_6_14_mh_b_quiesced_and_fallback():
    d, s = _mh()
    before = s.table.rows(d).copy()
    d.edit(1, weight=0)
    s.dests_changed(d)
    assert np.array_equal(s.table.rows(d), before)     # last_weight keeps the table
    assert _lookups(s, d) == "CC--C"
    d, s = _mh(flags=("mh-fallback",))
    d.edit(1, weight=0)
    s.dests_changed(d)
    assert _lookups(s, d) == "CCAAC"
    assert mh_hash(ip_to_int("198.18.100.3"), 0, MH_HASH1, 2661) % 4093 == 83
    assert mh_hash(ip_to_int("198.18.100.4"), 0, MH_HASH1, 1299) % 4093 == 3340


@pytest.mark.parametrize("octet, port, slot, expected", [
    ("100.1", 40000, 2918, "B"), ("100.1", 40001, 1415, "A"),
    ("100.2", 40000, 1415, "A"), ("100.2", 40001, 957, "B"),
])
def test_6_14_mh_port(octet, port, slot, expected):
    d, s = _mh(flags=("mh-port",))
    assert mh_hash(ip_to_int(f"198.18.{octet}"), port, MH_HASH1) % 4093 == slot
    assert picks(s, d, 1, flow=client(octet, port), bind=False) == expected


def test_6_14_mh_weight_scaling():
    from userlb.sched import mh
    assert mh.dest_turns([1, 100]) == [1, 50]            # g=1, fls(100)=7, rshift=1
    d = table([1, 100])
    counts = np.bincount(make("mh", d).table.rows(d)).tolist()
    assert counts[0] * 40 < counts[1]
