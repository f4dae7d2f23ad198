"""Bounded, same-process comparison of a candidate against a baseline, and its reports.

What it does: `compare(candidate, baseline, ...)` times both sides in the same
process, alternating them sample by sample so drift (frequency scaling, a noisy
neighbour) hits both alike; it stops at `repeat` samples per side or when
`max_seconds` would be passed, whichever comes first, and reports best-of and
median times per operation and the ratio baseline / candidate (> 1: the
candidate is faster). It also prints progress on stderr, renders text tables,
and writes JSON and PNG (matplotlib, Agg backend) reports.

What it does not do: decide what is measured or whether a ratio is good (each
bench and its targets do), or run anything in another process.

Mirrors: timeit's practice (garbage collector off while timing, calls looped so
a sample is long enough for the clock, the minimum as the best estimate), and
pyperf's habit of reporting the median beside it.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MIN_SAMPLE_S = 1e-3         # a plain callable is looped until one sample lasts this long
MAX_NUMBER = 100_000        # ... but never more calls than this per sample


@dataclass(frozen=True)
class Prepared:
    """A side whose state must be rebuilt before every sample: `prepare()` is not timed,
    `run(state)` is (once per sample)."""

    prepare: Callable[[], Any]
    run: Callable[[Any], Any]


Side = Callable[[], Any] | Prepared


@dataclass
class Timing:
    """Samples of one side: seconds per call (`number` calls each), `ops` operations per call."""

    samples_s: list[float]
    ops: int
    number: int

    @property
    def best_s(self) -> float:
        return min(self.samples_s) / self.ops

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s) / self.ops

    def to_dict(self) -> dict:
        return {"samples": len(self.samples_s), "calls_per_sample": self.number,
                "best_s_per_op": self.best_s, "median_s_per_op": self.median_s,
                "ops_per_s_best": 1.0 / self.best_s, "ops_per_s_median": 1.0 / self.median_s}


@dataclass
class Comparison:
    """One candidate/baseline pair measured in the same run."""

    name: str
    params: dict
    units: str
    candidate: Timing
    baseline: Timing
    elapsed_s: float
    checked: bool = False
    first: tuple = field(default=(None, None), repr=False)   # each side's first result

    @property
    def ratio(self) -> float:
        """Speed-up of the candidate, best against best."""
        return self.baseline.best_s / self.candidate.best_s

    @property
    def ratio_median(self) -> float:
        return self.baseline.median_s / self.candidate.median_s

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params, "units": self.units,
                "candidate": self.candidate.to_dict(), "baseline": self.baseline.to_dict(),
                "ratio": self.ratio, "ratio_median": self.ratio_median,
                "checked": self.checked, "elapsed_s": self.elapsed_s}


def compare(candidate: Side, baseline: Side, *, ops: int, repeat: int, max_seconds: float,
            units: str = "op", name: str = "", params: dict | None = None,
            check: Callable[[Any, Any], None] | None = None) -> Comparison:
    """Time both sides; at most `repeat` samples each and about `max_seconds` in all.

    Each side is first called once untimed-for-the-result (warm-up, and the
    calibration of how many calls make a sample). `check(first_candidate,
    first_baseline)` then runs on those first results, before any other call, so
    a bench can assert that both sides computed the same thing; it raises on a
    mismatch. At least one sample per side is always taken (the warm-up counts
    when there is no time for more), so a single slow call can pass the budget.
    """
    start = time.perf_counter()
    sides = (candidate, baseline)
    firsts, warm = zip(*(_call(side) for side in sides))
    if check is not None:
        check(*firsts)
    numbers = [1 if isinstance(s, Prepared) else _calibrate(w) for s, w in zip(sides, warm)]
    samples: tuple[list[float], list[float]] = ([], [])
    deadline = start + max_seconds
    while len(samples[0]) < repeat:
        last = [s[-1] if s else w * n for s, w, n in zip(samples, warm, numbers)]
        if time.perf_counter() + sum(last) > deadline:
            break
        for side, number, out in zip(sides, numbers, samples):
            out.append(_sample(side, number))
    for i, out in enumerate(samples):
        if not out:                      # no time for a sample: the warm-up call is it
            out.append(warm[i])
            numbers[i] = 1
    timings = [Timing(s, ops * n, n) for s, n in zip(samples, numbers)]
    return Comparison(name, dict(params or {}), units, timings[0], timings[1],
                      time.perf_counter() - start, check is not None, firsts)


def _calibrate(one_call_s: float) -> int:
    return max(1, min(MAX_NUMBER, math.ceil(MIN_SAMPLE_S / max(one_call_s, 1e-9))))


def _call(side: Side) -> tuple[Any, float]:
    """One call, timed; returns (its result, seconds)."""
    state = side.prepare() if isinstance(side, Prepared) else None
    fn = (lambda: side.run(state)) if isinstance(side, Prepared) else side
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t0
    finally:
        if was_enabled:
            gc.enable()


def _sample(side: Side, number: int) -> float:
    """Seconds for `number` calls (prepare excluded), garbage collector off."""
    if isinstance(side, Prepared):
        return _call(side)[1]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            side()
        return time.perf_counter() - t0
    finally:
        if was_enabled:
            gc.enable()


class Budget:
    """A wall-clock allowance shared out among the comparisons still to run."""

    def __init__(self, total_s: float, floor_s: float = 0.0) -> None:
        self.total_s = total_s
        self.floor_s = floor_s
        self.start = time.perf_counter()

    @property
    def left_s(self) -> float:
        return max(0.0, self.total_s - (time.perf_counter() - self.start))

    def share(self, cases_left: int) -> float:
        return max(self.floor_s, self.left_s / max(1, cases_left))


class Progress:
    """One line per finished step on stderr: `[bench  12/56  3.4s] text`."""

    def __init__(self, label: str, total: int, stream=None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        width = len(str(self.total))
        print(f"[{self.label} {self.done:>{width}}/{self.total} {elapsed:6.1f}s] {text}",
              file=self.stream, flush=True)

    def note(self, text: str) -> None:
        print(f"[{self.label}] {text}", file=self.stream, flush=True)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table; floats get 3 significant digits, columns are right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def metadata(mode: str) -> dict:
    import numpy
    return {"mode": mode, "python": platform.python_version(), "numpy": numpy.__version__,
            "machine": platform.machine(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "argv": sys.argv,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):   # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class Panel:
    """One subplot: named series of (x, y) points, optional horizontal target lines."""

    title: str
    series: dict[str, tuple[list[float], list[float]]]
    targets: dict[str, float] = field(default_factory=dict)
    unity: bool = True          # draw y = 1 (ratio panels)


def write_plot(path: Path, title: str, panels: list[Panel], *, xlabel: str, ylabel: str,
               logx: bool = True, logy: bool = True) -> Path | None:
    """A PNG with one subplot per panel; None (and a note on stderr) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.5 * rows), squeeze=False)
    colors = plt.get_cmap("tab20")
    for ax, panel in zip(axes.flat, panels):
        for i, (label, (xs, ys)) in enumerate(panel.series.items()):
            ax.plot(xs, ys, marker="o", ms=3, label=label, color=colors(i % 20))
        for label, y in panel.targets.items():
            ax.axhline(y, ls="--", lw=1, color="grey")
            ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7,
                        color="grey", va="bottom")
        if panel.unity:
            ax.axhline(1.0, lw=0.8, color="black")
        ax.set(title=panel.title, xlabel=xlabel, ylabel=ylabel)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
