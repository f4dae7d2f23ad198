"""ConnTable against a dict model: random batches of insert, lookups both ways,
remove, engine-style column writes, expiry with injected time, and victims, on
tiny tables (so collisions and full tables are common), some with zeroed hash
multipliers (every key in one bucket with one tag: overflow chains, false tag
matches). The overflow counts are checked against the placements after every step.
"""

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from userlb.conntable import ConnTable
from tests.unit.test_conntable import check_indexes

# A small key universe: 2 protocols x 3 clients x 2 ports x 2 VIPs = 24 IN keys;
# OUT keys (proto, daddr, dport, caddr, cport) repeat across VIPs.
in_keys = st.tuples(st.sampled_from([6, 17]), st.sampled_from([1, 2, 0xFFFFFFFF]),
                    st.sampled_from([1, 65535]), st.sampled_from([10, 11]), st.just(80))
out_keys = st.tuples(st.sampled_from([6, 17]), st.sampled_from([20, 21]), st.just(8080),
                     st.sampled_from([1, 2, 0xFFFFFFFF]), st.sampled_from([1, 65535]))
new_rows = st.tuples(in_keys, st.sampled_from([20, 21]), st.sampled_from([0, 1, 3, 5]),
                     st.integers(1, 20))


def column(rows, i, dtype=np.int64):
    return np.array([r[i] for r in rows], dtype=dtype)


class ConnTableModel(RuleBasedStateMachine):
    @initialize(capacity=st.sampled_from([1, 2, 4, 6, 24]), seed=st.integers(0, 2**32),
                zero_hash=st.booleans())
    def start(self, capacity, seed, zero_hash):
        self.table = ConnTable(capacity, seed=seed)
        if zero_hash:
            for index in (self.table._in, self.table._out):
                index.set_mults((0, 0, 0))
        self.model = {}  # id -> {"in": key, "out": key, "expires": float, "state": int}
        self.now = 0.0

    @rule(rows=st.lists(new_rows, max_size=8))
    def insert(self, rows):
        live_in = {e["in"] for e in self.model.values()}
        batch, seen = [], set()
        for key, daddr, state, ttl in rows:  # the caller's guarantee: new and unique keys
            if key not in live_in and key not in seen:
                seen.add(key)
                batch.append((key, daddr, state, ttl))
        keys = [b[0] for b in batch]
        ids = self.table.insert(column(keys, 0), column(keys, 1), column(keys, 2),
                                column(keys, 3), column(keys, 4), column(batch, 1), 8080,
                                7, 0, column(batch, 2), 0x100,
                                self.now + column(batch, 3, np.float64))
        free = self.table.capacity - len(self.model)
        assert ids.tolist()[len(batch) - max(0, len(batch) - free):] == \
            [-1] * max(0, len(batch) - free)
        placed = [i for i in ids.tolist() if i >= 0]
        assert len(set(placed)) == len(placed) and not set(placed) & set(self.model)
        for i, (key, daddr, state, ttl) in zip(placed, batch):
            out = (key[0], daddr, 8080, key[1], key[2])
            self.model[i] = {"in": key, "out": out, "expires": self.now + ttl, "state": state}

    @rule(keys=st.lists(in_keys, max_size=10))
    def lookup_in(self, keys):
        by_key = {e["in"]: i for i, e in self.model.items()}
        got = self.table.lookup_in(*(column(keys, j) for j in range(5)))
        assert got.tolist() == [by_key.get(k, -1) for k in keys]
        assert [self.table.lookup_in_one(*k) for k in keys] == got.tolist()
        big = self.table.lookup_in(*(column(keys * 8, j) for j in range(5)))   # numpy path
        assert big.tolist() == got.tolist() * 8

    @rule(keys=st.lists(out_keys, max_size=10))
    def lookup_out(self, keys):
        got = self.table.lookup_out(*(column(keys, j) for j in range(5)))
        assert [self.table.lookup_out_one(*k) for k in keys] == got.tolist()
        big = self.table.lookup_out(*(column(keys * 8, j) for j in range(5)))
        assert big.tolist() == got.tolist() * 8
        for key, i in zip(keys, got.tolist()):
            matches = {j for j, e in self.model.items() if e["out"] == key}
            assert (i in matches) if matches else i == -1

    @rule(data=st.data())
    def remove(self, data):
        candidates = sorted(self.model) + [-1, self.table.capacity - 1]
        doomed = data.draw(st.lists(st.sampled_from(candidates), max_size=5))
        self.table.remove(np.array(doomed, dtype=np.int64))
        for i in doomed:
            self.model.pop(i, None)

    @rule(data=st.data(), ttl=st.integers(0, 30), state=st.sampled_from([0, 1, 3, 5]))
    def touch(self, data, ttl, state):
        """The engine re-arms a timer and changes state by writing columns."""
        if self.model:
            i = data.draw(st.sampled_from(sorted(self.model)))
            self.table.expires[i] = self.now + ttl
            self.table.state[i] = state
            self.model[i].update(expires=self.now + ttl, state=state)

    @rule(dt=st.integers(0, 15))
    def tick_and_expire(self, dt):
        self.now += dt
        due = sorted(i for i, e in self.model.items() if e["expires"] <= self.now)
        got = self.table.expired(self.now)
        assert got.tolist() == due
        self.table.remove(got)
        for i in due:
            del self.model[i]

    @rule(n=st.integers(0, 7), states=st.sets(st.sampled_from([0, 1, 3, 5]), min_size=1))
    def victims(self, n, states):
        want = sorted((e["expires"], i) for i, e in self.model.items() if e["state"] in states)
        got = self.table.victims(n, np.array(sorted(states)))
        assert got.tolist() == [i for _, i in want[:n]]

    @invariant()
    def indexes_consistent(self):
        check_indexes(self.table)

    @invariant()
    def sizes_and_deadline(self):
        assert len(self.table) == len(self.model)
        assert self.table.live_ids().tolist() == sorted(self.model)
        deadline = min((e["expires"] for e in self.model.values()), default=float("inf"))
        assert self.table.next_deadline() == deadline


ConnTableModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True,
    database=None, suppress_health_check=[HealthCheck.too_slow])
TestConnTableModel = ConnTableModel.TestCase
