"""ConnTable's scalar lookups (lookup_in_one / lookup_out_one) against the vector ones.

The fast path (fastpath.py) relies on them returning exactly what lookup_in /
lookup_out return: same hash, same probe order (tag matches in slot order, then the
next bucket while the overflow count says so), and for OUT keys shared by several
entries the same one of them. Tiny tables with zeroed hash multipliers put every key
in one bucket with one tag, so false tag matches and overflow chains are common.
"""

import numpy as np
import pytest

from userlb.conntable import ConnTable

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


def collide(t: ConnTable) -> None:
    for index in (t._in, t._out):
        index.set_mults((0, 0, 0))
    t._probe_in = t._probe_out = None


@pytest.mark.parametrize("capacity,zero_hash", [(1, False), (3, False), (8, False), (32, False),
                                                (8, True), (48, True)])
def test_scalar_lookups_match_vector_under_churn(capacity, zero_hash):
    rng = np.random.default_rng(capacity)
    t = ConnTable(capacity, seed=capacity)
    if zero_hash:
        collide(t)
    clients, ports = np.arange(1, 7, dtype=np.uint32), np.array([1, 2, 65535], np.uint16)
    live: dict[tuple, int] = {}
    saw_overflow = False
    for _ in range(60):
        # insert some new IN keys (the caller's guarantee: not live, not repeated)
        cand = [(int(rng.choice([TCP, UDP])), int(rng.choice(clients)), int(rng.choice(ports)),
                 int(rng.choice(VIPS))) for _ in range(rng.integers(1, 12))]
        fresh = list(dict.fromkeys(k for k in cand if k not in live))
        if fresh:
            proto, caddr, cport, vaddr = (np.array(col) for col in zip(*fresh))
            ids = t.insert(proto, caddr, cport, vaddr, 80, rng.choice(RS, len(fresh)), 8080,
                           0, 0, 1, 0, 10.0)
            live.update((k, int(i)) for k, i in zip(fresh, ids) if i >= 0)
        saw_overflow |= bool(t._in.overflow.any() and t._out.overflow.any())
        doomed = [k for k in live if rng.random() < 0.3]
        t.remove([live.pop(k) for k in doomed])
        check_all(t, clients, ports)
    assert saw_overflow or not zero_hash or capacity <= 16


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


def test_arguments_wrap_to_the_column_widths():
    t = ConnTable(8, seed=1)
    t.insert(TCP, 5, 7, VIPS[0], 80, RS[0], 8080, 0, 0, 1, 0, 10.0)
    assert t.lookup_in_one(TCP + 256, 5 + 2**32, 7 + 2**16, VIPS[0], 80) == 0
    assert t.lookup_in(np.array([TCP]), 5, 7, VIPS[0], 80)[0] == 0
    assert t.lookup_in_one(UDP, 5, 7, VIPS[0], 80) == -1
    assert t.lookup_out_one(TCP, RS[0], 8080, 5, 7) == 0
