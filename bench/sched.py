"""Scheduler bench: new-flow decisions per second, batch form against the per-flow loop.

What it does: for every scheduler in `sched.available()`, every server count and
every batch size, times the candidate `schedule_batch(dests, flows, now)` plus
one vectorised bind of its picks against the baseline, a plain Python loop of
`schedule(dests, flow, now)` then `DestTable.bind(row, active)` per flow, which
is what a per-packet engine would run. Both sides start from identical twins
(same scheduler state, same counters) and the first batch of each is checked to
give the same picks and the same counters before anything is timed further.
Prints a table of ratios (baseline time / candidate time) and the targets of the
issue; writes sched.json and sched.png.

What it does not do: time flow parsing (the baseline gets its Flow objects built
beforehand, the candidate its FlowBatch columns), judge a scheduler's fairness,
or fail on a missed target (the summary says so; the lead decides).

Mirrors: the engine's new-flow path (engine._open: schedule_batch per service,
then Accounting.bind), and the batch == sequential contract of sched/base.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from userlb import sched
from userlb.bench.harness import Budget, Panel, Progress, compare, format_table, metadata
from userlb.bench.harness import write_json, write_plot
from userlb.sched.base import NO_DEST, Flow, FlowBatch
from userlb.services import DEST_F_OVERLOAD, IPPROTO_TCP, DestTable

SERVERS = {"full": (2, 10, 100, 1000), "smoke": (2, 50)}
BATCHES = {"full": (1, 4, 16, 64, 256, 1024, 4096), "smoke": (1, 256)}
REPEAT = {"full": 7, "smoke": 3}
TARGET_BATCH = 256
# The targets: batch form >= 20x the per-flow loop for the table-driven and
# round-robin schedulers, >= 5x for the least-connection family.
TARGETS = {"rr": 20.0, "wrr": 20.0, "dh": 20.0, "sh": 20.0, "mh": 20.0,
           "lc": 5.0, "wlc": 5.0, "sed": 5.0, "nq": 5.0}
NOW = 1.0
VIP = 0xC6120164          # 198.18.1.100; LVS-NAT: every new flow is addressed to the VIP
RS_BASE = 0xC6120200      # 198.18.2.0
MAX_WEIGHT = 5


def scheduler_params(name: str) -> dict:
    """Constructor arguments that make twin instances behave identically."""
    if name == "twos":
        return {"seed": 7}
    if name in ("lblc", "lblcr"):
        return {"created_s": 0.0}
    return {}


def make_dests(servers: int, rng: np.random.Generator) -> DestTable:
    weights = rng.integers(1, MAX_WEIGHT + 1, servers)
    return DestTable.build(RS_BASE + np.arange(servers), np.full(servers, 8080), weights)


def make_flows(count: int, rng: np.random.Generator) -> FlowBatch:
    """New TCP flows from random clients to VIP:80."""
    return FlowBatch(np.full(count, IPPROTO_TCP, np.uint8),
                     rng.integers(0x0A000000, 0x0B000000, count, dtype=np.uint32),
                     rng.integers(1024, 65536, count).astype(np.uint16),
                     np.full(count, VIP, np.uint32), np.full(count, 80, np.uint16))


def bind_batch(dests: DestTable, picks: np.ndarray, proto: np.ndarray) -> None:
    """DestTable.bind for every pick at once (counters only grow, so one OVERLOAD test at
    the end sets the same flags as testing after each bind)."""
    ok = picks != NO_DEST
    tcp = proto == IPPROTO_TCP
    dests.activeconns += np.bincount(picks[ok & tcp], minlength=len(dests))
    dests.inactconns += np.bincount(picks[ok & ~tcp], minlength=len(dests))
    u = dests.u_threshold
    dests.flags[(u != 0) & (dests.activeconns + dests.inactconns >= u)] |= np.uint8(DEST_F_OVERLOAD)


def sequential(scheduler, dests: DestTable, flows: list[Flow], now: float) -> np.ndarray:
    """The baseline: one schedule() and one bind per flow, as a per-packet engine would."""
    picks = []
    for flow in flows:
        row = scheduler.schedule(dests, flow, now)
        if row != NO_DEST:
            dests.bind(row, flow.proto == IPPROTO_TCP)
        picks.append(row)
    return np.array(picks, np.int32)


def measure(name: str, dests: DestTable, flows: FlowBatch, *, repeat: int, max_seconds: float):
    """One configuration: twins of scheduler `name` on copies of `dests`."""
    params = scheduler_params(name)
    cand, base = sched.create(name, **params), sched.create(name, **params)
    d_cand, d_base = dests.copy(), dests.copy()
    cand.dests_changed(d_cand)
    base.dests_changed(d_base)
    flow_list = [flows[i] for i in range(len(flows))]

    def candidate():
        picks = cand.schedule_batch(d_cand, flows, NOW)
        bind_batch(d_cand, picks, flows.proto)
        return picks

    def baseline():
        return sequential(base, d_base, flow_list, NOW)

    def check(picks_cand, picks_base):
        np.testing.assert_array_equal(picks_cand, picks_base, err_msg=f"{name}: picks differ")
        for column in ("activeconns", "inactconns", "flags"):
            np.testing.assert_array_equal(getattr(d_cand, column), getattr(d_base, column),
                                          err_msg=f"{name}: {column} differ")

    return compare(candidate, baseline, ops=len(flows), repeat=repeat, max_seconds=max_seconds,
                   units="flow", name=name,
                   params={"servers": len(dests), "batch": len(flows)}, check=check)


def run(mode: str = "full", max_seconds: float = 170.0, out_dir: Path | None = None,
        seed: int = 1) -> dict:
    """The whole sweep; prints tables on stdout, progress on stderr; returns the payload."""
    names = sched.available()
    servers, batches = SERVERS[mode], BATCHES[mode]
    cases = [(n, s, b) for n in servers for s in names for b in batches]
    budget = Budget(max_seconds)
    progress = Progress("sched", len(cases))
    rng = np.random.default_rng(seed)
    flows = {b: make_flows(b, rng) for b in batches}
    results = []
    for i, (n, name, b) in enumerate(cases):
        dests = make_dests(n, np.random.default_rng([seed, n]))
        c = measure(name, dests, flows[b], repeat=REPEAT[mode],
                    max_seconds=budget.share(len(cases) - i))
        results.append(c)
        progress.step(f"{name:<6} servers={n:<5} batch={b:<5} ratio {c.ratio:7.2f}x "
                      f"({1 / c.candidate.best_s:,.0f} vs {1 / c.baseline.best_s:,.0f} flows/s)")
    payload = {"bench": "sched", "meta": metadata(mode), "targets": TARGETS,
               "target_batch": TARGET_BATCH, "schedulers": names,
               "servers": list(servers), "batches": list(batches),
               "checks": {"configurations": len(results),
                          "passed": sum(c.checked for c in results)},
               "results": [c.to_dict() for c in results],
               "summary": summarise(results, names, servers)}
    print(render(payload))
    if out_dir is not None:
        payload["files"] = {"json": str(Path(out_dir) / "sched.json"),
                            "png": _plot(results, names, servers, Path(out_dir) / "sched.png")}
        write_json(Path(out_dir) / "sched.json", payload)
    return payload


def summarise(results, names, servers) -> dict:
    """Per scheduler: ratio at TARGET_BATCH for each server count, the worst, the target."""
    out = {}
    for name in names:
        at = {c.params["servers"]: c.ratio for c in results
              if c.name == name and c.params["batch"] == TARGET_BATCH}
        target = TARGETS.get(name)
        worst = min(at.values()) if at else None
        out[name] = {"target": target, "ratio_at_target_batch": {str(k): v for k, v in at.items()},
                     "min_ratio": worst,
                     "meets_target": None if target is None or worst is None else worst >= target}
    return out


def render(payload: dict) -> str:
    batches = payload["batches"]
    rows = []
    for r in payload["results"]:
        if r["batch"] == batches[0]:
            rows.append([r["name"], r["servers"]])
        rows[-1].append(r["ratio"])
    grid = format_table(["sched", "servers", *[f"b={b}" for b in batches]], rows)
    servers = payload["servers"]
    summary = [[name, s["target"] or "-",
                *[s["ratio_at_target_batch"].get(str(n), "-") for n in servers],
                {True: "yes", False: "NO", None: "-"}[s["meets_target"]]]
               for name, s in payload["summary"].items()]
    targets = format_table(["sched", "target", *[f"n={n}" for n in servers], "met"], summary)
    return (f"\nsched: batch form / per-flow loop (x faster, best of samples)\n{grid}\n\n"
            f"targets at batch {payload['target_batch']} (worst over server counts):\n"
            f"{targets}\n")


def _plot(results, names, servers, path: Path) -> str | None:
    panels = []
    for n in servers:
        series = {}
        for name in names:
            pts = [(c.params["batch"], c.ratio) for c in results
                   if c.name == name and c.params["servers"] == n]
            series[name] = ([x for x, _ in pts], [y for _, y in pts])
        panels.append(Panel(f"{n} servers", series, {"20x": 20.0, "5x": 5.0}))
    written = write_plot(path, "schedulers: batch form vs per-flow loop", panels,
                         xlabel="batch size (new flows)", ylabel="speed-up (x)")
    return None if written is None else str(written)
