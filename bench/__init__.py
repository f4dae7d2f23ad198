"""Benchmarks (userlb.bench): each against a baseline measured in the same run.

`main(argv)` runs `python -m userlb.bench ...` in-process (for `userlb bench`).
"""


def main(argv: list[str] | None = None) -> int:
    from userlb.bench.__main__ import main as run   # lazy: python -m imports __main__ itself
    return run(argv)
