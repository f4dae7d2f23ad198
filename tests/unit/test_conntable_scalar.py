"""ConnTable's scalar lookups (lookup_in_one / lookup_out_one) against the vector ones.

The fast path (fastpath.py) relies on them returning exactly what lookup_in /
lookup_out return: same hash, same probe order, tombstones passed over, the
max_probe bound, and for OUT keys shared by several entries the same one of them.
Tiny tables make collisions, long chains, tombstones and rebuilds common.
"""

import numpy as np
import pytest

from userlb import conntable
from userlb.conntable import TOMB, ConnTable

TCP, UDP = 6, 17
VIPS = (0xC6120001, 0xC6120002)
RS = (0xC6130001, 0xC6130002)


def check_all(t: ConnTable, clients, ports) -> None:
    """Every key of the universe, both directions: scalar == vector."""
    for proto in (TCP, UDP):
        for vip in VIPS:
            c, p = np.meshgrid(clients, ports, indexing="ij")
            c, p = c.ravel(), p.ravel()
            want = t.lookup_in(proto, c, p, vip, 80).tolist()
            got = [t.lookup_in_one(proto, int(a), int(b), vip, 80) for a, b in zip(c, p)]
            assert got == want
        for rs in RS:
            want = t.lookup_out(proto, rs, 8080, c, p).tolist()
            got = [t.lookup_out_one(proto, rs, 8080, int(a), int(b)) for a, b in zip(c, p)]
            assert got == want


@pytest.mark.parametrize("capacity", [1, 3, 8, 32])
def test_scalar_lookups_match_vector_under_churn(capacity):
    rng = np.random.default_rng(capacity)
    t = ConnTable(capacity, seed=capacity)
    clients, ports = np.arange(1, 7, dtype=np.uint32), np.array([1, 2, 65535], np.uint16)
    live: dict[tuple, int] = {}
    saw_tomb = saw_chain = False
    for _ in range(60):
        # insert some new IN keys (the caller's guarantee: not live, not repeated)
        cand = [(int(rng.choice([TCP, UDP])), int(rng.choice(clients)), int(rng.choice(ports)),
                 int(rng.choice(VIPS))) for _ in range(rng.integers(1, 6))]
        fresh = list(dict.fromkeys(k for k in cand if k not in live))
        if fresh:
            proto, caddr, cport, vaddr = (np.array(col) for col in zip(*fresh))
            ids = t.insert(proto, caddr, cport, vaddr, 80, rng.choice(RS, len(fresh)), 8080,
                           0, 0, 1, 0, 10.0)
            live.update((k, int(i)) for k, i in zip(fresh, ids) if i >= 0)
        doomed = [k for k in live if rng.random() < 0.3]
        t.remove([live.pop(k) for k in doomed])
        saw_tomb |= bool((t._in.slots == TOMB).any())
        saw_chain |= t._in.max_probe > 0
        check_all(t, clients, ports)
    assert saw_tomb
    assert saw_chain or capacity == 1


def test_shared_out_keys_return_the_same_entry():
    """Two VIPs, one real server, one client port: equal OUT keys; both paths agree on which."""
    t = ConnTable(4, seed=3)
    for rnd in range(30):
        ids = t.insert(TCP, 9, 1000, np.array(VIPS), 80, RS[0], 8080, 0, 0, 1, 0, 10.0)
        assert t.lookup_out_one(TCP, RS[0], 8080, 9, 1000) == \
            int(t.lookup_out(TCP, RS[0], 8080, 9, 1000)[0]) in ids.tolist()
        t.remove(ids[rnd % 2: rnd % 2 + 1])
        assert t.lookup_out_one(TCP, RS[0], 8080, 9, 1000) == \
            int(t.lookup_out(TCP, RS[0], 8080, 9, 1000)[0])
        t.remove(ids)


def test_key_hash_one_is_key_hash():
    rng = np.random.default_rng(5)
    seed = rng.integers(0, 2**64, size=2, dtype=np.uint64)
    a, b = rng.integers(0, 2**32, 50, dtype=np.uint64), rng.integers(0, 2**32, 50, dtype=np.uint64)
    proto = rng.integers(0, 256, 50, dtype=np.uint64)
    pa = rng.integers(0, 2**16, 50, dtype=np.uint64)
    pb = rng.integers(0, 2**16, 50, dtype=np.uint64)
    want = conntable.key_hash(a, b, proto, pa, pb, seed).tolist()
    got = [conntable.key_hash_one(*map(int, k), (int(seed[0]), int(seed[1])))
           for k in zip(a, b, proto, pa, pb)]
    assert got == want


def test_arguments_wrap_to_the_column_widths():
    t = ConnTable(8, seed=1)
    t.insert(TCP, 5, 7, VIPS[0], 80, RS[0], 8080, 0, 0, 1, 0, 10.0)
    assert t.lookup_in_one(TCP + 256, 5 + 2**32, 7 + 2**16, VIPS[0], 80) == 0
    assert t.lookup_in(np.array([TCP]), 5, 7, VIPS[0], 80)[0] == 0
    assert t.lookup_in_one(UDP, 5, 7, VIPS[0], 80) == -1
    assert t.lookup_out_one(TCP, RS[0], 8080, 5, 7) == 0
