"""lc, wlc, sed, nq, fo, ovf, twos: skip rules, ties, C integer arithmetic."""

from __future__ import annotations

import random

import pytest

from userlb import sched
from userlb.sched.base import NO_DEST, Flow
from userlb.services import DEST_F_OVERLOAD, DestTable

TCP, UDP = 6, 17


def table(weights, **columns):
    return DestTable.build([0xC6120101 + i for i in range(len(weights))], [80] * len(weights),
                           weights, **columns)


def pick(name, d, proto=TCP, **params):
    s = sched.create(name, **params)
    s.dests_changed(d)
    return s.schedule(d, Flow(proto, 0xC6126401, 1000, 0xC6120001, 80), 0.0)


ALL_STATELESS = ["lc", "wlc", "sed", "nq", "fo", "ovf"]


@pytest.mark.parametrize("name", ALL_STATELESS + ["twos"])
def test_no_server_or_all_unusable_is_null(name):
    assert pick(name, DestTable()) == NO_DEST
    assert pick(name, table([0, 0])) == NO_DEST
    assert pick(name, table([3, 5], flags=[3, 3])) == NO_DEST


@pytest.mark.parametrize("name", ALL_STATELESS + ["twos"])
def test_only_one_usable_server(name):
    d = table([7, 0, 4], flags=[3, 1, 1], activeconns=[0, 0, 2])
    assert pick(name, d) == 2


@pytest.mark.parametrize("name, expected", [
    ("lc", 0), ("wlc", 0), ("sed", 1), ("nq", 0), ("fo", 1), ("ovf", 1)])
def test_ties_and_weights(name, expected):
    # A(w1) and B(w2), both idle: least-connection ties keep A; sed prefers the heavier
    assert pick(name, table([1, 2])) == expected


def test_wlc_weight_zero_later_server_never_wins_even_idle():
    assert pick("wlc", table([1, 0], activeconns=[50, 0])) == 0


def test_wlc_skips_overloaded_first_candidate():
    d = table([1, 1, 1], activeconns=[0, 5, 9], flags=[3, 1, 1])
    assert pick("wlc", d) == 1


def test_wlc_uses_exact_64_bit_products():
    # 256*100000 * 65535 > 2**31: compared exactly, as the kernel's (s64) casts do
    d = table([1, 65535], activeconns=[100000, 100000 * 65535 - 1])
    assert pick("wlc", d) == 1


def test_sed_and_nq_ignore_inactive_connections():
    d = table([1, 1], activeconns=[1, 1], inactconns=[0, 900])
    assert pick("sed", d) == 0
    assert pick("lc", d) == 0
    assert pick("wlc", d) == 0
    d = table([1, 1], activeconns=[2, 1], inactconns=[0, 900])
    assert pick("sed", d) == 1 and pick("nq", d) == 1 and pick("lc", d) == 0


def test_sed_unsigned_int_products_wrap_like_the_kernel():
    # (65537+1)*65535 wraps mod 2**32 to 65534 < (69999+1)*1: the kernel keeps A
    d = table([1, 65535], activeconns=[65537, 69999])
    assert pick("sed", d) == 0
    d = table([1, 65535], activeconns=[1000, 69999])           # no wrap: B is better
    assert pick("sed", d) == 1


def test_nq_unsigned_int_products_wrap_like_the_kernel():
    d = table([1, 65535], activeconns=[65537, 69999])
    assert pick("nq", d) == 0


def test_nq_idle_server_wins_regardless_of_weight():
    assert pick("nq", table([100, 1], activeconns=[1, 0])) == 1
    assert pick("nq", table([100, 1, 1], activeconns=[1, 0, 0], flags=[1, 3, 1])) == 2


def test_udp_services_look_idle_to_sed_nq_and_ovf():
    d = table([1, 4, 2], inactconns=[0, 50, 0])
    assert pick("sed", d, UDP) == 1
    assert pick("nq", d, UDP) == 0
    assert pick("ovf", d, UDP) == 1


def test_ovf_skips_active_above_weight_and_overloaded():
    d = table([3, 5, 4], activeconns=[0, 6, 4], flags=[1, 1, 3])
    assert pick("ovf", d) == 0
    d = table([3, 5, 5], activeconns=[0, 5, 0])
    assert pick("ovf", d) == 1                          # 5 > 5 is false: still usable


def test_fo_ignores_connection_counts():
    assert pick("fo", table([1, 9], activeconns=[0, 10**6])) == 1


class Draws:
    def __init__(self, *values):
        self.values = list(values)

    def getrandbits(self, bits):
        assert bits == 32
        return self.values.pop(0)


def test_twos_draws_are_u32_mod_total_plus_one():
    d = table([1, 2, 3])
    # total+1 = 7: 7 → 0 (A), 2**32-1 → 3 (B); loads equal → r1's choice
    assert pick("twos", d, rng=Draws(7, 2**32 - 1)) == 0
    assert pick("twos", d, rng=Draws(2**32 - 1, 7)) == 1


def test_twos_skips_overloaded_and_zero_weight_in_the_walk():
    d = table([5, 0, 2], flags=[3, 1, 1])
    assert pick("twos", d, rng=Draws(0, 1)) == 2


def test_twos_int_products_wrap_like_the_kernel():
    # w2*oh1 = 1000 * 2560000 overflows int: negative, so choice1 (A) stays
    d = table([1, 1000], activeconns=[10000, 0])
    assert pick("twos", d, rng=Draws(0, 2)) == 0
    d = table([1, 1000], activeconns=[100, 0])                  # no overflow: B
    assert pick("twos", d, rng=Draws(0, 2)) == 1


def test_twos_seed_and_rng_are_deterministic():
    d = table([1, 2, 3, 4], activeconns=[3, 1, 4, 1])
    flows = [Flow(TCP, i, i, 1, 80) for i in range(40)]
    runs = []
    for params in ({"seed": 5}, {"seed": 5}, {"rng": random.Random(5)}):
        s = sched.create("twos", **params)
        runs.append([s.schedule(d, f, 0.0) for f in flows])
    assert runs[0] == runs[1] == runs[2]
    assert set(runs[0]) <= {0, 1, 2, 3}


def test_overload_flag_is_honoured_by_every_connection_scheduler():
    for name in ALL_STATELESS:
        d = table([5, 5], flags=[1 | DEST_F_OVERLOAD, 1])
        assert pick(name, d) == 1, name
