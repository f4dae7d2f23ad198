"""Connection-table bench: ConnTable batch operations against a plain Python dict table.

What it does: fills a ConnTable and a `DictTable` (two dicts keyed by the IN and
OUT 5-tuples, columns as Python lists indexed by entry id) with the same
connections, then at several batch sizes times lookup_in, lookup_out, insert and
expire (scan for due entries, then remove them) on both. DictTable hands out ids
with the same free stack discipline as ConnTable, so both sides must return the
same ids; the first call of every comparison is checked for that. Also reports
ConnTable.nbytes per connection at 1,000,000 entries (target <= 128 bytes) and,
for scale, what the dict table takes per connection (tracemalloc).

Also times the scalar lookups the per-packet fast path uses ("lookup_in/one",
"lookup_out/one": one lookup_in_one call per packet against one dict.get), and fits
lookup_in's cost as a fixed part per call plus a part per row (from batches of
FIT_ROWS), which shows how far numpy's per-call overhead leaves the 10x target.

What it does not do: time key parsing. The baseline gets its keys as ready-made
tuples (the cheapest form for a dict), the candidate as ready-made columns
(what parse_ipv4 gives the engine). One extra row, "lookup_in/cols", charges the
baseline for building its tuples from the same columns, which is the
like-for-like comparison inside the engine.

Mirrors: the engine's use of the table (lookup_in/lookup_out per batch, insert
of new flows, expired() then remove() on the timer).
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np

from userlb.bench.harness import Budget, Panel, Prepared, Progress, compare, format_table
from userlb.bench.harness import metadata, write_json, write_plot
from userlb.conntable import ConnTable

ENTRIES = {"full": 1_000_000, "smoke": 20_000}
BATCHES = {"full": (1, 16, 256, 4096), "smoke": (1, 256)}
REPEAT = {"full": 30, "smoke": 3}
OPS = ("lookup_in", "lookup_in/cols", "lookup_out", "lookup_in/one", "lookup_out/one", "insert",
       "expire")
FIT_ROWS = (32, 2048)     # batch sizes of the fixed + per-row cost fit
# numpy calls in ConnTable._lookup for a batch found in its home buckets: five copies
# into the query words, six for the hash (multiply, xor, multiply, shift, xor,
# multiply), shift to the bucket, take tags, equal, argmax, shift, add,
# take slots, take keys, equal, count_nonzero.
LOOKUP_NUMPY_CALLS = 21
MEMORY_ENTRIES = 1_000_000
TARGET_BATCH = 256
TARGETS = {"bytes_per_conn_max": 128.0, "lookup_ratio_min": 10.0}
ROUND_OPS = 256           # insert/expire: batches per sample so a sample holds >= this many rows
NOW = 100.0
IN_KEY = ("proto", "caddr", "cport", "vaddr", "vport")
OUT_KEY = ("proto", "daddr", "dport", "caddr", "cport")
TCP, VIP, RS_BASE = 6, 0xC6120164, 0xC6120200


class DictTable:
    """The baseline: what a per-packet Python balancer would keep.

    by_in/by_out map 5-tuples to an entry id; `rows[id]` holds the entry (its two
    keys and its destination), `expires[id]` its deadline. Free ids are a stack
    whose top is the smallest freed id, as in ConnTable.
    """

    def __init__(self, capacity: int) -> None:
        self.by_in: dict[tuple, int] = {}
        self.by_out: dict[tuple, int] = {}
        self.rows: list[tuple | None] = [None] * capacity
        self.expires: list[float] = [math.inf] * capacity
        self.free = list(range(capacity - 1, -1, -1))

    def insert(self, rows: list[tuple]) -> list[int]:
        """rows: (proto, caddr, cport, vaddr, vport, daddr, dport, expires) each."""
        ids = []
        for proto, caddr, cport, vaddr, vport, daddr, dport, expires in rows:
            if not self.free:
                ids.append(-1)
                continue
            i = self.free.pop()
            key_in = (proto, caddr, cport, vaddr, vport)
            key_out = (proto, daddr, dport, caddr, cport)
            self.by_in[key_in] = i
            self.by_out[key_out] = i
            self.rows[i] = (key_in, key_out, daddr, dport)
            self.expires[i] = expires
            ids.append(i)
        return ids

    def lookup(self, index: dict, keys: list[tuple]) -> list[int]:
        get = index.get
        return [get(k, -1) for k in keys]

    def expired(self, now: float) -> list[int]:
        return [i for i, t in enumerate(self.expires) if t <= now]

    def remove(self, ids: list[int]) -> None:
        for i in sorted(set(ids), reverse=True):    # smallest id ends on top of the stack
            row = self.rows[i]
            if row is None:
                continue
            del self.by_in[row[0]]
            del self.by_out[row[1]]
            self.rows[i] = None
            self.expires[i] = math.inf
            self.free.append(i)


def make_conns(count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`count` distinct TCP connections client → VIP:80 → one of 16 servers :8080."""
    key = rng.choice(2**40, size=count, replace=False)          # distinct (caddr, cport)
    return {"proto": np.full(count, TCP, np.uint8),
            "caddr": (0x0A000000 + (key >> 16)).astype(np.uint32),
            "cport": (key & 0xFFFF).astype(np.uint16),
            "vaddr": np.full(count, VIP, np.uint32), "vport": np.full(count, 80, np.uint16),
            "daddr": (RS_BASE + rng.integers(0, 16, count)).astype(np.uint32),
            "dport": np.full(count, 8080, np.uint16),
            "expires": np.full(count, NOW + 900.0)}


def take(conns: dict, sel) -> dict:
    return {k: v[sel] for k, v in conns.items()}


def tuples(conns: dict, names: tuple[str, ...]) -> list[tuple]:
    return list(zip(*(conns[n].tolist() for n in names)))


def insert_both(table: ConnTable, dt: DictTable, conns: dict) -> tuple[np.ndarray, list[int]]:
    ids = table.insert(*(conns[c] for c in ("proto", "caddr", "cport", "vaddr", "vport",
                                            "daddr", "dport")), 0, 0, 3, 0, conns["expires"])
    return ids, dt.insert(tuples(conns, (*IN_KEY, "daddr", "dport", "expires")))


def _same(a, b, what: str) -> None:
    np.testing.assert_array_equal(np.asarray(a, np.int64), np.asarray(b, np.int64),
                                  err_msg=f"{what}: ConnTable and dict baseline differ")


class Fixture:
    """A ConnTable and a DictTable holding the same `entries` connections, plus spare ones."""

    def __init__(self, entries: int, spare: int, rng: np.random.Generator) -> None:
        every = make_conns(entries + spare, rng)
        self.live = take(every, slice(0, entries))
        self.spare = take(every, slice(entries, entries + spare))
        self.table = ConnTable(entries + spare, seed=1)
        self.dt = DictTable(entries + spare)
        ids, dids = insert_both(self.table, self.dt, self.live)
        _same(ids, dids, "fill")
        self.rng = rng

    def lookup(self, op: str, batch: int, **kw):
        """One call looks up `rounds` different batches (256 keys in all at small batch sizes),
        so the result does not hang on the probe length of one unlucky key."""
        rounds = max(1, ROUND_OPS // batch)
        names = OUT_KEY if op == "lookup_out" else IN_KEY
        queries = [take(self.live, self.rng.integers(0, len(self.live["proto"]), batch))
                   for _ in range(rounds)]
        cols = [[q[n] for n in names] for q in queries]
        keys = [tuples(q, names) for q in queries]
        out = op.startswith("lookup_out")
        index = self.dt.by_out if out else self.dt.by_in
        method = self.table.lookup_out if out else self.table.lookup_in
        one = self.table.lookup_out_one if out else self.table.lookup_in_one
        lookup = self.dt.lookup

        def cand():
            return [method(*c) for c in cols]

        def cand_one():
            return [[one(*k) for k in ks] for ks in keys]

        def base():
            return [lookup(index, k) for k in keys]

        def base_from_columns():
            return [np.array(lookup(index, list(zip(*(a.tolist() for a in c)))), np.int32)
                    for c in cols]

        def check(a, b):
            _same(np.concatenate(a), np.concatenate([np.asarray(x, np.int64) for x in b]), op)

        return compare(cand_one if op.endswith("/one") else cand,
                       base_from_columns if op == "lookup_in/cols" else base,
                       ops=rounds * batch, units="packet", check=check, **kw)

    def insert(self, batch: int, **kw):
        rounds = max(1, ROUND_OPS // batch)
        chunks = [take(self.spare, slice(r * batch, (r + 1) * batch)) for r in range(rounds)]
        rows = [tuples(c, (*IN_KEY, "daddr", "dport", "expires")) for c in chunks]
        cols = [[c[n] for n in (*IN_KEY, "daddr", "dport")] for c in chunks]
        made: dict[str, list] = {"cand": [], "base": []}

        def undo(side):                       # untimed: take the previous sample's rows out
            for ids in made[side]:
                (self.table.remove if side == "cand" else self.dt.remove)(list(ids))
            made[side] = []

        def cand(_):
            made["cand"] = [self.table.insert(*c, 0, 0, 3, 0, NOW + 900.0) for c in cols]
            return np.concatenate(made["cand"])

        def base(_):
            made["base"] = [self.dt.insert(r) for r in rows]
            return np.concatenate(made["base"])

        result = compare(Prepared(lambda: undo("cand"), cand), Prepared(lambda: undo("base"), base),
                         ops=rounds * batch, units="conn",
                         check=lambda a, b: _same(a, b, "insert"), **kw)
        undo("cand"), undo("base")
        return result

    def expire(self, batch: int, **kw):
        """`batch` live entries are due at NOW; one sample = one scan and their removal."""
        due = self.rng.choice(len(self.live["proto"]), batch, replace=False)
        conns = take(self.live, due)
        conns["expires"] = np.full(batch, NOW - 1.0)
        ids = self.table.lookup_in(*(conns[n] for n in IN_KEY))
        dids = self.dt.lookup(self.dt.by_in, tuples(conns, IN_KEY))
        self.table.expires[ids] = NOW - 1.0
        for i in dids:
            self.dt.expires[i] = NOW - 1.0
        gone = {"cand": False, "base": False}

        def refill(side):                     # untimed: put the removed entries back, due
            if gone[side]:
                if side == "cand":
                    self.table.insert(*(conns[c] for c in ("proto", "caddr", "cport", "vaddr",
                                      "vport", "daddr", "dport")), 0, 0, 3, 0, conns["expires"])
                else:
                    self.dt.insert(tuples(conns, (*IN_KEY, "daddr", "dport", "expires")))
            gone[side] = True

        def cand(_):
            ids = self.table.expired(NOW)
            self.table.remove(ids)
            return ids

        def base(_):
            ids = self.dt.expired(NOW)
            self.dt.remove(ids)
            return ids

        result = compare(Prepared(lambda: refill("cand"), cand), Prepared(lambda: refill("base"), base),
                         ops=batch, units="conn", check=lambda a, b: _same(a, b, "expire"), **kw)
        refill("cand"), refill("base")
        self.table.expires[self.table.expires <= NOW] = NOW + 900.0
        self.dt.expires = [NOW + 900.0 if t <= NOW else t for t in self.dt.expires]
        return result


def cost_model(fx: Fixture, max_seconds: float) -> dict:
    """lookup_in's time per call as fixed + per_row x rows, fitted from two batch sizes
    (both on the numpy path), next to the dict's time per row; and what the fixed part
    may be for lookup_in to be 10x the dict at TARGET_BATCH."""
    runs = [fx.lookup("lookup_in", b, repeat=REPEAT["full"], max_seconds=max_seconds / 2,
                      name="fit", params={"batch": b}) for b in FIT_ROWS]
    (b1, b2), (c1, c2) = FIT_ROWS, [r.candidate.best_s * b for r, b in zip(runs, FIT_ROWS)]
    per_row = (c2 - c1) / (b2 - b1)
    fixed = c1 - per_row * b1
    dict_row = min(r.baseline.best_s for r in runs)
    budget = TARGET_BATCH * dict_row / TARGETS["lookup_ratio_min"]
    return {"fixed_us": fixed * 1e6, "per_row_ns": per_row * 1e9, "dict_row_ns": dict_row * 1e9,
            "numpy_calls": LOOKUP_NUMPY_CALLS, "us_per_numpy_call": fixed * 1e6 / LOOKUP_NUMPY_CALLS,
            "target_budget_us": budget * 1e6,
            "target_fixed_max_us": (budget - TARGET_BATCH * per_row) * 1e6}


def memory(entries: int, dict_entries: int, rng: np.random.Generator) -> dict:
    """ConnTable.nbytes per connection when full at `entries`; DictTable's, by tracemalloc
    (everything it keeps alive: dicts, tuples, the int and float objects, lists)."""
    conns = make_conns(entries, rng)
    table = ConnTable(entries, seed=1)
    table.insert(*(conns[c] for c in ("proto", "caddr", "cport", "vaddr", "vport", "daddr",
                                      "dport")), 0, 0, 3, 0, conns["expires"])
    sample = take(conns, slice(0, dict_entries))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    dt = DictTable(dict_entries)
    rows = tuples(sample, (*IN_KEY, "daddr", "dport", "expires"))
    dt.insert(rows)
    del rows
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del dt
    return {"entries": len(table), "capacity": table.capacity, "nbytes": table.nbytes,
            "bytes_per_conn": table.nbytes / len(table), "index_slots": table.index_slots,
            "dict_entries": dict_entries, "dict_bytes_per_conn": used / dict_entries}


def run(mode: str = "full", max_seconds: float = 170.0, out_dir: Path | None = None,
        seed: int = 1) -> dict:
    """Every op at every batch size, then the memory figure; returns the payload."""
    rng = np.random.default_rng(seed)
    batches = BATCHES[mode]
    cases = [(op, b) for op in OPS for b in batches]
    progress = Progress("conntable", len(cases) + 2)
    fx = Fixture(ENTRIES[mode], max(max(batches), ROUND_OPS), rng)
    progress.note(f"filled both tables with {ENTRIES[mode]:,} connections")
    budget = Budget(max_seconds * 0.85)                    # leave room for the memory figure
    results = []
    for i, (op, b) in enumerate(cases):
        kw = {"repeat": REPEAT[mode], "max_seconds": budget.share(len(cases) - i),
              "name": op, "params": {"batch": b, "entries": ENTRIES[mode]}}
        if op.startswith("lookup"):
            c = fx.lookup(op, b, **kw)
        else:
            c = getattr(fx, op)(b, **kw)
        results.append(c)
        progress.step(f"{op:<14} batch={b:<5} ratio {c.ratio:7.2f}x "
                      f"({c.candidate.best_s * 1e9:,.0f} vs {c.baseline.best_s * 1e9:,.0f} ns/{c.units})")
    model = cost_model(fx, budget.share(1))
    progress.step(f"lookup_in: {model['fixed_us']:.1f} us per call + {model['per_row_ns']:.1f} "
                  f"ns per row; dict {model['dict_row_ns']:.1f} ns per row")
    del fx
    entries = MEMORY_ENTRIES if mode == "full" else ENTRIES[mode]
    mem = memory(entries, min(entries, 100_000), rng)
    progress.step(f"memory at {mem['entries']:,} entries: {mem['bytes_per_conn']:.1f} bytes/conn")
    payload = {"bench": "conntable", "meta": metadata(mode), "targets": TARGETS,
               "target_batch": TARGET_BATCH, "ops": list(OPS), "batches": list(batches),
               "checks": {"configurations": len(results),
                          "passed": sum(c.checked for c in results)},
               "results": [c.to_dict() for c in results], "memory": mem, "cost_model": model,
               "summary": summarise(results, mem)}
    print(render(payload))
    if out_dir is not None:
        png = write_plot(Path(out_dir) / "conntable.png", "ConnTable vs dict baseline",
                         [Panel("per-row speed-up", _series(results), {"10x": 10.0})],
                         xlabel="batch size (rows)", ylabel="speed-up (x)")
        payload["files"] = {"json": str(Path(out_dir) / "conntable.json"),
                            "png": None if png is None else str(png)}
        write_json(Path(out_dir) / "conntable.json", payload)
    return payload


def summarise(results, mem: dict) -> dict:
    at = {c.name: c.ratio for c in results if c.params["batch"] == TARGET_BATCH}
    lookups = [at[k] for k in ("lookup_in", "lookup_out") if k in at]
    worst = min(lookups) if lookups else None
    return {"ratio_at_target_batch": at, "lookup_ratio_min": worst,
            "lookup_meets_target": None if worst is None else worst >= TARGETS["lookup_ratio_min"],
            "bytes_per_conn": mem["bytes_per_conn"],
            "memory_meets_target": mem["bytes_per_conn"] <= TARGETS["bytes_per_conn_max"]}


def render(payload: dict) -> str:
    batches = payload["batches"]
    rows = []
    for op in payload["ops"]:
        rs = [r for r in payload["results"] if r["name"] == op]
        rows.append([op, *[r["ratio"] for r in rs]])
    rate_rows = [[r["name"], r["batch"], r["candidate"]["best_s_per_op"] * 1e9,
                  r["baseline"]["best_s_per_op"] * 1e9, r["ratio"], r["ratio_median"]]
                 for r in payload["results"]]
    s, m, cm = payload["summary"], payload["memory"], payload["cost_model"]
    yes = {True: "yes", False: "NO", None: "-"}
    return (f"\nconntable: ConnTable batch / dict baseline (x faster per row, best of samples;"
            f" {payload['results'][0]['entries']:,} live entries)\n"
            f"{format_table(['op', *[f'b={b}' for b in batches]], rows)}\n\n"
            f"{format_table(['op', 'batch', 'ns/row', 'dict ns/row', 'ratio', 'median'], rate_rows)}\n\n"
            f"memory: {m['bytes_per_conn']:.1f} bytes/conn at {m['entries']:,} entries "
            f"(target <= {TARGETS['bytes_per_conn_max']:.0f}: {yes[s['memory_meets_target']]}); "
            f"dict baseline {m['dict_bytes_per_conn']:.0f} bytes/conn\n"
            f"lookups at batch {payload['target_batch']}: worst {s['lookup_ratio_min']:.3g}x "
            f"(target >= {TARGETS['lookup_ratio_min']:.0f}x: {yes[s['lookup_meets_target']]})\n"
            f"lookup_in cost: {cm['fixed_us']:.1f} us per call ({cm['numpy_calls']} numpy calls, "
            f"{cm['us_per_numpy_call']:.2f} us each) + {cm['per_row_ns']:.1f} ns per row; "
            f"dict {cm['dict_row_ns']:.1f} ns per row. {TARGETS['lookup_ratio_min']:.0f}x at batch "
            f"{payload['target_batch']} allows {cm['target_budget_us']:.1f} us per call: "
            + (f"at most {cm['target_fixed_max_us']:.1f} us fixed\n"
               if cm['target_fixed_max_us'] > 0 else
               f"less than the rows alone cost ({cm['per_row_ns'] * payload['target_batch'] / 1e3:.1f}"
               f" us), with no fixed cost at all\n"))


def _series(results) -> dict:
    out: dict[str, tuple[list, list]] = {}
    for c in results:
        xs, ys = out.setdefault(c.name, ([], []))
        xs.append(c.params["batch"])
        ys.append(c.ratio)
    return out
