"""ConnTable: lookups both ways, insert/remove/expire, victims, full tables, collisions."""

import numpy as np
import pytest

from userlb import connindex
from userlb.conntable import CONN_F_INACTIVE, ConnTable

TCP, UDP = 6, 17
VIP, RS1, RS2 = 0xC6120001, 0xC6130001, 0xC6130002  # 198.18.0.1, 198.19.0.1, 198.19.0.2


def add(table, caddrs, cports, daddr=RS1, expires=100.0, state=3, vport=80, proto=TCP):
    """Insert client flows to VIP:vport, NATed to daddr:8080."""
    return table.insert(proto, caddrs, cports, VIP, vport, daddr, 8080, 0, 1, state,
                        CONN_F_INACTIVE, expires)


def test_insert_then_lookup_both_directions():
    t = ConnTable(16, seed=1)
    ids = add(t, [1, 2, 3], [1000, 1001, 1002])
    assert ids.tolist() == [0, 1, 2] and len(t) == 3
    assert t.lookup_in(TCP, [3, 1, 2], [1002, 1000, 1001], VIP, 80).tolist() == [2, 0, 1]
    # reply: saddr:sport = real server, daddr:dport = client
    assert t.lookup_out(TCP, RS1, 8080, [2, 3], [1001, 1002]).tolist() == [1, 2]
    assert t.daddr[1] == RS1 and t.dport[1] == 8080 and t.flags[1] == CONN_F_INACTIVE
    assert t.state[0] == 3 and t.service[0] == 0 and t.dest[0] == 1 and t.in_pkts[0] == 0


def test_misses():
    t = ConnTable(8, seed=2)
    add(t, [1], [1000])
    assert t.lookup_in(UDP, 1, 1000, VIP, 80).tolist() == [-1]       # other protocol
    assert t.lookup_in(TCP, 1, 1001, VIP, 80).tolist() == [-1]       # other cport
    assert t.lookup_in(TCP, 1, 1000, VIP, 81).tolist() == [-1]       # other vport
    assert t.lookup_out(TCP, RS2, 8080, 1, 1000).tolist() == [-1]    # other real server
    assert t.lookup_out(TCP, RS1, 8081, 1, 1000).tolist() == [-1]    # other real port
    assert t.lookup_in(TCP, [], [], VIP, 80).tolist() == []
    assert ConnTable(4).lookup_out(TCP, RS1, 8080, [1, 2], 1000).tolist() == [-1, -1]


def test_out_keys_may_repeat():
    t = ConnTable(8, seed=3)
    a = add(t, 1, 1000, vport=80)[0]
    b = add(t, 1, 1000, vport=443)[0]  # same client port to two services, same real server
    assert t.lookup_out(TCP, RS1, 8080, 1, 1000)[0] in (a, b)
    t.remove([a])
    assert t.lookup_out(TCP, RS1, 8080, 1, 1000).tolist() == [b]
    assert t.lookup_in(TCP, 1, 1000, VIP, [80, 443]).tolist() == [-1, b]


def test_remove_and_reuse_of_deleted_entries():
    t = ConnTable(4, seed=4)
    add(t, [1, 2, 3, 4], 5)
    t.remove([2, 0, 2, -1])  # repeats and -1 are ignored
    assert len(t) == 2
    assert t.lookup_in(TCP, [1, 2, 3, 4], 5, VIP, 80).tolist() == [-1, 1, -1, 3]
    assert sorted(t.live_ids().tolist()) == [1, 3]
    assert add(t, [7, 8, 9], 5).tolist() == [0, 2, -1]  # smallest freed id first; then full
    assert t.lookup_in(TCP, [7, 8, 1], 5, VIP, 80).tolist() == [0, 2, -1]
    t.remove([0])
    t.remove([0])  # removing a dead id again is a no-op
    assert len(t) == 3


def test_full_table_returns_minus_one():
    t = ConnTable(4, seed=5)
    assert add(t, [1, 2, 3, 4, 5, 6], 9).tolist() == [0, 1, 2, 3, -1, -1]
    assert add(t, [7], 9).tolist() == [-1]
    assert t.lookup_in(TCP, [4, 5], 9, VIP, 80).tolist() == [3, -1]


def test_expired_and_next_deadline():
    t = ConnTable(8, seed=6)
    assert t.next_deadline() == float("inf") and t.expired(1e9).size == 0
    add(t, [1, 2, 3], 7, expires=[30.0, 10.0, 20.0])
    assert t.next_deadline() == 10.0
    assert t.expired(9.99).tolist() == []
    assert t.expired(20.0).tolist() == [1, 2]   # expires <= now; not removed
    assert len(t) == 3
    t.expires[2] = 50.0  # the engine re-arms timers by writing the column
    t.remove(t.expired(20.0))
    assert t.next_deadline() == 30.0 and len(t) == 2


def test_victims_earliest_first_filtered_by_state():
    t = ConnTable(8, seed=7)
    add(t, [1, 2, 3, 4, 5, 6], 1, expires=[5.0, 3.0, 9.0, 3.0, 1.0, 2.0],
        state=[3, 3, 1, 0, 1, 3])
    assert t.victims(10, [3, 0]).tolist() == [5, 1, 3, 0]   # ties by id
    assert t.victims(2, [3, 0]).tolist() == [5, 1]
    assert t.victims(3, [3, 0]).tolist() == [5, 1, 3]
    assert t.victims(2, [1]).tolist() == [4, 2]
    assert t.victims(0, [1]).tolist() == [] and t.victims(3, [5]).tolist() == []


def collide(t):
    """Zero both indexes' hash multipliers: every key gets bucket 0 and tag 0."""
    for index in (t._in, t._out):
        index.set_mults((0, 0, 0))
    t._probe_in = t._probe_out = None


def check_indexes(t):
    """Every live entry sits in its recorded slots; overflow counts are exactly the
    buckets that live entries passed between their home bucket and their slot's."""
    live = t.live_ids()
    for index, slot, a, b in ((t._in, t.in_slot, t._in_words[live, 1], t._in_words[live, 0]),
                              (t._out, t.out_slot, t._out_words[live, 0], t._out_words[live, 1])):
        assert (index.slots[slot[live]] == live).all()
        assert np.count_nonzero(index.slots != connindex.EMPTY) == len(live)
        home = index.home(a, b)[0]
        passed = ((slot[live].astype(np.int64) >> 4) - home) & index.bmask
        want = np.zeros(index.nbuckets, np.int64)
        for h, p in zip(home.tolist(), passed.tolist()):
            for step in range(p):
                want[(h + step) & index.bmask] += 1
        assert index.overflow.tolist() == want.tolist()


def test_many_collisions_with_a_constant_hash():
    """Every key in one bucket with one tag: overflow chains under the worst case, both
    directions, vector and scalar lookups, and the overflow counts after every round."""
    t = ConnTable(40, seed=8)
    collide(t)
    live = {}
    rng = np.random.default_rng(0)
    saw_overflow = False
    for round_ in range(60):
        free = [p for p in range(200) if p not in live]
        ports = rng.choice(free, size=min(rng.integers(1, 14), 40 - len(live)), replace=False)
        for port, i in zip(ports, add(t, 1, ports)):
            live[int(port)] = int(i)
        saw_overflow |= bool(t._in.overflow.any())
        doomed = rng.choice(sorted(live), size=len(live) // 3, replace=False)
        t.remove([live.pop(int(p)) for p in doomed])
        check_indexes(t)
        probe = np.arange(200)
        want = [live.get(p, -1) for p in probe]
        assert t.lookup_in(TCP, 1, probe, VIP, 80).tolist() == want
        assert t.lookup_out(TCP, RS1, 8080, 1, probe).tolist() == want
        assert [t.lookup_in_one(TCP, 1, p, VIP, 80) for p in range(200)] == want
        assert [t.lookup_out_one(TCP, RS1, 8080, 1, p) for p in range(200)] == want
    assert saw_overflow and len(t) == len(live)


def test_batch_sizes_around_the_scalar_cutoff():
    """Small batches go key by key, larger ones through numpy, leftovers key by key or
    by the vector probe: every size gives the same answers."""
    t = ConnTable(4096, seed=12)
    ids = add(t, np.arange(3000), 7)
    rng = np.random.default_rng(1)
    for n in list(range(0, 20)) + [255, 256, 257, 1000]:
        caddr = rng.integers(0, 6000, n)          # about half of them live
        want = np.where(caddr < 3000, ids[np.minimum(caddr, 2999)], -1)
        assert t.lookup_in(TCP, caddr, 7, VIP, 80).tolist() == want.tolist()
        assert t.lookup_out(TCP, RS1, 8080, caddr, 7).tolist() == want.tolist()
        assert t.lookup_in(np.full(n, TCP, np.uint8), caddr.astype(np.uint32),
                           np.full(n, 7, np.uint16), np.full(n, VIP, np.uint32),
                           np.full(n, 80, np.uint16)).tolist() == want.tolist()


def test_tiny_capacities():
    for capacity in (1, 2, 3, 4):
        t = ConnTable(capacity, seed=capacity)
        assert t.index_slots >= 2 * capacity and t.index_slots & (t.index_slots - 1) == 0
        for cycle in range(20):  # churn forces tombstone reuse and rebuilds
            ids = add(t, cycle, np.arange(capacity + 1))
            assert (ids[:capacity] >= 0).all() and ids[capacity] == -1
            assert t.lookup_in(TCP, cycle, np.arange(capacity), VIP, 80).tolist() == \
                ids[:capacity].tolist()
            t.remove(ids)
            assert len(t) == 0
            assert (t.lookup_in(TCP, cycle, np.arange(capacity), VIP, 80) == -1).all()


def test_batch_insert_with_shared_home_slots():
    t = ConnTable(64, seed=9)
    ids = add(t, np.arange(64), 4000)
    assert ids.tolist() == list(range(64))
    assert t.lookup_in(TCP, np.arange(64), 4000, VIP, 80).tolist() == list(range(64))
    assert t.lookup_out(TCP, RS1, 8080, np.arange(64), 4000).tolist() == list(range(64))


def test_results_do_not_depend_on_the_seed():
    def scenario(seed):
        t = ConnTable(16, seed=seed)
        add(t, np.arange(16), 1)
        t.remove([3, 7, 11])
        return add(t, [100, 101, 102], 1).tolist(), t.lookup_in(TCP, np.arange(17), 1, VIP, 80)
    a, b = scenario(1), scenario(None)
    assert a[0] == b[0] and a[1].tolist() == b[1].tolist()


def test_key_words_and_hash_vector_and_scalar_agree():
    """The scalar path hashes Python ints; the values are the vector hash's."""
    rng = np.random.default_rng(3)
    n = 200
    a, b = rng.integers(0, 2**32, n, dtype=np.uint32), rng.integers(0, 2**32, n, dtype=np.uint32)
    proto = rng.integers(0, 256, n).astype(np.uint8)
    pa, pb = rng.integers(0, 2**16, n).astype(np.uint16), rng.integers(0, 2**16, n).astype(np.uint16)
    mults = tuple(int(k) * 2 + 1 for k in rng.integers(0, 2**63, 3))
    words = connindex.key_words(proto, a, pa, b, pb)
    want = [(int(x) | int(y) << 32 | int(z) << 48 | 0x40 << 56, int(u) | int(v) << 32 | 0x40 << 56)
            for x, y, z, u, v in zip(a, pa, proto, b, pb)]
    assert words.tolist() == [list(w) for w in want]
    got = connindex.key_hash_words(words[:, 0], words[:, 1], mults).tolist()
    assert got == [connindex.key_hash_one(x, y, mults) for x, y in want]
    # read as complex128, words compare equal exactly when they are equal (never NaN)
    as_complex = words.view(np.complex128).ravel()
    assert np.isfinite(as_complex).all()
    assert (as_complex == as_complex).all() and (as_complex[1:] != as_complex[:-1]).all()


def test_lookup_arguments_cast_as_columns():
    """Wider or signed key arguments wrap to the column widths, as astype would."""
    t = ConnTable(8, seed=4)
    ids = add(t, [1, 2], [80, 81])
    keys = (np.array([TCP + 256, TCP], np.int64), np.array([1, 2 + 2**32], np.int64),
            np.array([80, 81 - 2**16], np.int64))
    assert t.lookup_in(*keys, VIP, 80).tolist() == ids.tolist()                # broadcast
    vip, vport = np.array([VIP, VIP - 2**32], np.int64), np.array([80, 80], np.int32)
    assert t.lookup_in(*keys, vip, vport).tolist() == ids.tolist()            # 1-d arrays


def test_memory_budget_at_one_million():
    t = ConnTable(1_000_000, seed=0)
    assert t.index_slots == 2**21 and t._in.nbuckets == 2**17
    assert t.nbytes / 1_000_000 <= 128


def test_large_table_smoke():
    t = ConnTable(2_000_000, seed=0)
    n = 50_000
    caddr = np.arange(n, dtype=np.uint32) + 0x0A000000
    ids = add(t, caddr, 40000)
    assert (ids == np.arange(n)).all()
    assert (t.lookup_in(TCP, caddr, 40000, VIP, 80) == ids).all()
    assert (t.lookup_out(TCP, RS1, 8080, caddr, 40000) == ids).all()


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        ConnTable(0)
