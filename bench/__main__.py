"""python -m userlb.bench sched|conntable|engine|path|health [--smoke] [--out DIR] [OPTIONS].

Runs one bench (or `all`), prints its ratio table on stdout and progress on
stderr, and writes NAME.json and NAME.png into the results folder. `--smoke`
shrinks every sweep so each bench finishes in a few seconds (what CI runs);
full mode is bounded by --max-seconds per bench (a bench module may set its own
DEFAULT_MAX_S: path, which drives real traffic through a namespace lab as root,
takes up to 10 minutes; health, as root too, about 70 s). Options the common
parser does not know go to the bench module's parse_options(argv) (path: --paths,
--only); a bench without one refuses them. `main(argv)` is what `userlb bench ...`
calls.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

BENCHES = {"sched": "userlb.bench.sched", "conntable": "userlb.bench.conntable",
           "engine": "userlb.bench.enginepath", "path": "userlb.bench.path",
           "health": "userlb.bench.health"}
DEFAULT_MAX_S = {"full": 170.0, "smoke": 5.0}


def default_out() -> Path:
    """bench/results/ in a source checkout (git-ignored), else ./userlb-bench-results."""
    here = Path(__file__).resolve().parent
    if (here.parent / "pyproject.toml").exists():
        return here / "results"
    return Path.cwd() / "userlb-bench-results"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="userlb bench", description=__doc__.splitlines()[0])
    p.add_argument("bench", choices=[*BENCHES, "all"])
    p.add_argument("--smoke", action="store_true", help="tiny sweep, a few seconds per bench")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: bench/results)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="time budget per bench (default 170 full, 5 smoke; path 600, 150)")
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    mode = "smoke" if args.smoke else "full"
    out = args.out if args.out is not None else default_out()
    benches = list(BENCHES) if args.bench == "all" else [args.bench]
    modules = {bench: importlib.import_module(BENCHES[bench]) for bench in benches}
    options = {}
    for bench, module in modules.items():
        if hasattr(module, "parse_options"):
            options[bench] = module.parse_options(extra)
        elif extra:
            p.error(f"unrecognized arguments for {bench}: {' '.join(extra)}")
    for bench, module in modules.items():
        budget = (args.max_seconds if args.max_seconds is not None
                  else getattr(module, "DEFAULT_MAX_S", DEFAULT_MAX_S)[mode])
        payload = module.run(mode, budget, out, seed=args.seed, **options.get(bench, {}))
        print(f"wrote {payload['files']['json']}" +
              (f" and {payload['files']['png']}" if payload["files"]["png"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
