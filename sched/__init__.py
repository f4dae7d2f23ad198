"""Scheduler registry: register(cls), create(name, ...), available().

Mirrors register_ip_vs_scheduler / ip_vs_scheduler_get: schedulers are found by
their IPVS name (ipvsadm -s NAME). Importing this package registers the
built-in schedulers; outside ones may come from the `userlb.schedulers`
entry-point group. This module does not schedule anything itself.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch, Scheduler

__all__ = ["NO_DEST", "BaseScheduler", "Flow", "FlowBatch", "Scheduler", "register", "create",
           "available"]

_REGISTRY: dict[str, type] = {}

# One module per scheduler, named as IPVS names it. Modules not written yet are skipped.
BUILTIN = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "lblc", "lblcr", "dh",
           "sh", "mh")


def register(cls: type) -> type:
    """Make `cls` selectable by `cls.name`; usable as a class decorator."""
    _REGISTRY[cls.name] = cls
    return cls


def create(name: str, flags: tuple[str, ...] = (), **params) -> BaseScheduler:
    """A new scheduler instance by IPVS name; KeyError names the known ones."""
    _load()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scheduler {name!r} (known: {', '.join(available())})") from None
    return cls(flags=tuple(flags), **params)


def available() -> list[str]:
    _load()
    return sorted(_REGISTRY)


_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        try:
            importlib.import_module(f"userlb.sched.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"userlb.sched.{name}":
                raise
    for ep in entry_points(group="userlb.schedulers"):
        register(ep.load())
