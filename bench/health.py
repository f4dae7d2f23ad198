"""Health bench: 1,000 real servers checked once a second, lateness and CPU, runner against a plain loop.

What it does (as root): makes one network namespace `ulb-<pid>-<n>-hb` whose loopback carries
198.18.4.1/22, starts one uvloop process there listening on 198.18.4.1 + i, port 80, for every
real server i (1,000 listening sockets, each accepting and closing at once), then runs a measuring
process in the same namespace (`ip netns exec`), which runs two phases one after the other, each
on a fresh uvloop loop for the same wall time (full 30 s, smoke 3 s):

- **runner**: HealthRunner over one service of N real servers, one TcpCheck each (interval 1 s,
  max_concurrent 64 as the daemon's default), its `prober` hook wrapped to record, for every probe,
  lateness = loop time at probe start − the policy's due time (read from runner.policy.next_due
  before the probe runs), then calling the real probes.run_check.
- **baseline**: the same N targets as N plain tasks: sleep until due, `asyncio.open_connection`,
  close, due = end + interval (first due jittered over one interval as well); no policy, no bound.

CPU is the measuring process's getrusage (user + system) over each phase, as % of one core;
checks/s counts probes started in the phase. Prints a table; writes health.json and health.png.

What it does not do: change health/ (it only wraps the prober hook), judge (the summary compares
against the issue's target: 1,000 checks/s, p99 lateness <= 50 ms, <= 25 % of one core), or
measure the listeners' CPU as part of either side.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SERVERS = 1000
INTERVAL_S = 1.0
MAX_CONCURRENT = 64
DURATION_S = {"full": 30.0, "smoke": 3.0}
DEFAULT_MAX_S = {"full": 120.0, "smoke": 30.0}
TARGET = {"checks_per_s": 1000.0, "p99_lateness_ms": 50.0, "cpu_pct_one_core": 25.0}
NET = "198.18.4.1/22"          # on lo: the whole 198.18.4.0/22 is local
FIRST = (198 << 24) | (18 << 16) | (4 << 8) | 1
PORT = 80
LAYOUTS = (1, 100)            # the runner over 1 service x 1,000 reals, then 100 services x 10
RUNNERS = tuple(f"runner {k} svc" for k in LAYOUTS)
SIDES = RUNNERS + ("baseline",)
_counter = itertools.count(1)


def server_ip(i: int) -> str:
    v = FIRST + i
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


# ---------------------------------------------------------------- inside the namespace

def serve(n: int) -> None:
    """Listen on server_ip(i):PORT for i < n; accept and close; print 'ready'; run until killed."""
    import asyncio
    import uvloop

    class Close(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(n):
            await loop.create_server(Close, server_ip(i), PORT, backlog=512, reuse_address=True)
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _runner_phase(n: int, duration_s: float, seed: int, rec: dict, services: int = 1) -> None:
    import asyncio

    from userlb.health.probes import run_check
    from userlb.health.runner import HealthRunner
    from userlb.health.spec import ServiceHealth, TcpCheck
    from userlb.services import RealServer, VirtualService

    check = TcpCheck(interval_s=INTERVAL_S, connect_timeout_s=1.0)
    per = -(-n // services)
    svcs = []
    for k in range(services):
        reals = tuple(RealServer(server_ip(i), PORT) for i in range(k * per, min(n, (k + 1) * per)))
        service = VirtualService("tcp", f"198.18.{k // 250}.{1 + k % 250}", PORT, "rr", reals)
        svcs.append(ServiceHealth(service=service, checks=tuple((check,) for _ in reals)))
    loop = asyncio.get_running_loop()
    runner: HealthRunner

    def on_change(event) -> None:
        rec["events"] += 1

    async def prober(chk, host: str, port: int):
        start = loop.time()
        due = runner.policy.next_due(by_target[(host, port)])
        rec["starts"].append(start)
        rec["lateness"].append(start - due)
        result = await run_check(chk, host, port)
        rec["ok"] += result.ok
        return result

    runner = HealthRunner(svcs, on_change, seed=seed, max_concurrent=MAX_CONCURRENT, prober=prober)
    rec["t0"] = loop.time()
    await runner.start()
    rec["events"] = 0                       # count changes after the initial table only
    by_target = {runner.policy.target(cid)[1:]: cid for cid in runner.policy.check_ids()}
    await asyncio.sleep(rec["t0"] + duration_s - loop.time())
    await runner.stop()


async def _baseline_phase(n: int, duration_s: float, seed: int, rec: dict) -> None:
    import asyncio
    import random

    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    rec["t0"] = t0 = loop.time()
    end = t0 + duration_s

    async def one(host: str, due: float) -> None:
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            start = loop.time()
            if start >= end:
                return
            rec["starts"].append(start)
            rec["lateness"].append(start - due)
            try:
                _, writer = await asyncio.open_connection(host, PORT)
                writer.close()
                rec["ok"] += 1
            except OSError:
                pass
            due = loop.time() + INTERVAL_S

    tasks = [asyncio.create_task(one(server_ip(i), t0 + rng.uniform(0.0, INTERVAL_S)))
             for i in range(n)]
    await asyncio.sleep(end - loop.time())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def measure(n: int, duration_s: float, seed: int) -> dict:
    """Every phase on a fresh uvloop loop; raw per-phase records (lateness in s, CPU, wall)."""
    import functools

    import uvloop

    phases = [(f"runner {k} svc", functools.partial(_runner_phase, services=k)) for k in LAYOUTS]
    out = {}
    for side, phase in (*phases, ("baseline", _baseline_phase)):
        rec = {"starts": [], "lateness": [], "ok": 0, "events": 0}
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        uvloop.run(phase(n, duration_s, seed, rec))
        rec["cpu_s"], rec["wall_s"] = _cpu_s() - cpu0, time.perf_counter() - wall0
        t0 = rec.pop("t0")
        rec["starts"] = [s - t0 for s in rec["starts"]]
        out[side] = rec
        print(f"[health] {side}: {len(rec['starts'])} probes in {rec['wall_s']:.1f}s, "
              f"cpu {rec['cpu_s']:.2f}s", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------- the bench (parent)

def summarise(rec: dict, n: int, duration_s: float) -> dict:
    import numpy as np

    late_ms = np.asarray(rec["lateness"]) * 1e3
    probes = len(late_ms)
    pct = (lambda q: float(np.percentile(late_ms, q))) if probes else (lambda q: float("nan"))
    return {"probes": probes, "passed": rec["ok"], "state_changes": rec["events"],
            "expected": n * duration_s / INTERVAL_S,
            "completion": probes / (n * duration_s / INTERVAL_S),
            "checks_per_s": probes / duration_s,
            "lateness_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9),
                            "max": float(late_ms.max()) if probes else float("nan")},
            "cpu_s": rec["cpu_s"], "wall_s": rec["wall_s"],
            "cpu_pct_one_core": 100.0 * rec["cpu_s"] / rec["wall_s"],
            "cpu_us_per_check": 1e6 * rec["cpu_s"] / max(probes, 1)}


def _ratio(a: float, b: float) -> float | None:
    """a / b, None when b is 0 (uvloop's clock has 1 ms steps: a p50 lateness can be 0)."""
    return a / b if b else None


def render(payload: dict) -> str:
    from userlb.bench.harness import format_table

    rows = []
    for side in SIDES:
        s = payload["sides"][side]
        lat = s["lateness_ms"]
        rows.append([side, s["checks_per_s"], f"{s['probes']}/{s['expected']:.0f}", lat["p50"],
                     lat["p99"], lat["max"], s["cpu_pct_one_core"], s["cpu_us_per_check"]])
    for side in RUNNERS:
        r = payload["ratios"][side]
        rows.append([f"{side} / baseline", r["checks_per_s"], "", r["p50_lateness"], r["p99_lateness"],
                     "", r["cpu"], r["cpu_per_check"]])
    verdicts = "; ".join(f"{side} {'meets it' if payload['summary'][side]['meets_target'] else 'misses it'}"
                         for side in RUNNERS)
    head = (f"health: {payload['servers']} TCP checks every {INTERVAL_S:g} s, {payload['duration_s']:g} s "
            f"per side, uvloop, listeners {payload['listeners']}")
    verdict = (f"target: >= {TARGET['checks_per_s']:,.0f} checks/s, p99 <= {TARGET['p99_lateness_ms']:g} ms, "
               f"<= {TARGET['cpu_pct_one_core']:g} % of one core -> {verdicts}")
    table = format_table(["side", "checks/s", "probes/expected", "p50 ms", "p99 ms", "max ms",
                          "CPU % core", "CPU us/check"], rows)
    return f"{head}\n{table}\n{verdict}"


def _plot(payload: dict, raw: dict, path: Path) -> Path | None:
    import numpy as np

    from userlb.bench.harness import Panel, write_plot

    qs = [10, 25, 50, 75, 90, 95, 99, 99.9, 100]
    lat = {side: ([float(q) for q in qs],
                  [float(np.percentile(np.asarray(raw[side]["lateness"]) * 1e3, q)) for q in qs])
           for side in SIDES if raw[side]["lateness"]}
    secs = int(payload["duration_s"])
    rate = {side: (list(range(secs)),
                   np.bincount(np.asarray(raw[side]["starts"], dtype=int).clip(0, secs - 1),
                               minlength=secs).tolist())
            for side in SIDES}
    panels = [Panel("probe lateness (start - due) by percentile, ms", lat,
                    {"target p99 50 ms": TARGET["p99_lateness_ms"]}, unity=False),
              Panel("probes started per second", rate,
                    {"1,000/s": TARGET["checks_per_s"]}, unity=False)]
    return write_plot(path, f"health: {payload['servers']} TCP checks at 1/s (runner vs plain loop)",
                      panels, xlabel="percentile | second", ylabel="ms | probes", logx=False, logy=False)


def run(mode: str = "full", max_seconds: float = 120.0, out_dir: Path | None = None,
        seed: int = 1, servers: int = SERVERS) -> dict:
    """The bench; needs root and ip(8). Prints the table; returns the payload."""
    from userlb.bench.harness import Progress, metadata, write_json
    from userlb.netns import exec_argv, ip_cmd, run as run_cmd

    duration = min(DURATION_S[mode], max(1.0, (max_seconds - 10.0) / 2))
    ns = f"ulb-{os.getpid()}-{next(_counter)}-hb"
    progress = Progress("health", 3)
    listener = None
    try:
        run_cmd(["ip", "netns", "add", ns])
        ip_cmd(ns, "link", "set", "lo", "up")
        ip_cmd(ns, "addr", "add", NET, "dev", "lo")
        listener = subprocess.Popen(exec_argv(ns, [sys.executable, "-m", "userlb.bench.health",
                                                   "serve", str(servers)]),
                                    stdout=subprocess.PIPE, text=True)
        if listener.stdout.readline().strip() != "ready":
            raise RuntimeError(f"listener failed (exit {listener.wait()})")
        progress.step(f"namespace {ns}: {servers} listeners on {server_ip(0)}..{server_ip(servers - 1)}:{PORT}")
        proc = subprocess.run(exec_argv(ns, [sys.executable, "-m", "userlb.bench.health", "measure",
                                             str(servers), str(duration), str(seed)]),
                              stdout=subprocess.PIPE, text=True, timeout=2 * duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"measuring process failed (exit {proc.returncode})")
        raw = json.loads(proc.stdout)
        progress.step("measured runner and baseline")
    finally:
        if listener is not None:
            listener.terminate()
            try:
                listener.wait(5)
            except subprocess.TimeoutExpired:
                listener.kill()
                listener.wait()
        run_cmd(["ip", "netns", "del", ns], check=False)
    sides = {side: summarise(raw[side], servers, duration) for side in SIDES}
    bl = sides["baseline"]
    ratios, summary = {}, {}
    for side in RUNNERS:
        rn = sides[side]
        ratios[side] = {"checks_per_s": _ratio(rn["checks_per_s"], bl["checks_per_s"]),
                        "p50_lateness": _ratio(rn["lateness_ms"]["p50"], bl["lateness_ms"]["p50"]),
                        "p99_lateness": _ratio(rn["lateness_ms"]["p99"], bl["lateness_ms"]["p99"]),
                        "cpu": _ratio(rn["cpu_pct_one_core"], bl["cpu_pct_one_core"]),
                        "cpu_per_check": _ratio(rn["cpu_us_per_check"], bl["cpu_us_per_check"])}
        summary[side] = {
            "meets_target": (rn["checks_per_s"] >= 0.99 * TARGET["checks_per_s"] * servers / SERVERS
                             and rn["lateness_ms"]["p99"] <= TARGET["p99_lateness_ms"]
                             and rn["cpu_pct_one_core"] <= TARGET["cpu_pct_one_core"]),
            "checks_per_s": rn["checks_per_s"], "p99_lateness_ms": rn["lateness_ms"]["p99"],
            "cpu_pct_one_core": rn["cpu_pct_one_core"]}
    payload = {"bench": "health", "meta": metadata(mode), "servers": servers,
               "interval_s": INTERVAL_S, "duration_s": duration, "max_concurrent": MAX_CONCURRENT,
               "listeners": f"{servers} sockets on {server_ip(0)}..{server_ip(servers - 1)}:{PORT} "
                            f"(lo {NET}, one uvloop process)",
               "namespace": ns, "target": TARGET, "sides": sides, "ratios": ratios,
               "summary": summary}
    payload["table"] = render(payload)
    print(payload["table"])
    if out_dir is not None:
        payload["files"] = {"json": str(Path(out_dir) / "health.json"),
                            "png": _plot(payload, raw, Path(out_dir) / "health.png")}
        write_json(Path(out_dir) / "health.json", payload)
    progress.step("report written")
    return payload


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="internal entry points of the health bench")
    p.add_argument("role", choices=["serve", "measure"])
    p.add_argument("args", nargs="*")
    a = p.parse_args()
    if a.role == "serve":
        serve(int(a.args[0]))
    else:
        n, dur, seed = int(a.args[0]), float(a.args[1]), int(a.args[2])
        report = json.dumps(measure(n, dur, seed)) + "\n"
        # uvloop leaves stdout non-blocking: a report over a pipe's 64 KiB, written while
        # the parent is slow to read, would lose its tail to EAGAIN
        os.set_blocking(sys.stdout.fileno(), True)
        sys.stdout.write(report)
        sys.stdout.flush()
