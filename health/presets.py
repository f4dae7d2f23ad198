"""Timing presets that reproduce Piranha's nanny and keepalived, and the TOML table → check builder.

What it does: nanny_knobs() and keepalived_knobs() turn each program's own settings into the
knobs of spec.py; with_preset() applies them to a check; check_from_table() builds a check from
one `[[service.real.check]]` TOML table (a preset fills defaults, explicit keys win) and
service_health_from_tables() a ServiceHealth from `[service.health]` plus those tables.

What it mirrors (spec §1.7, §2.3–2.4):
  nanny       interval = connect = I/O timeout = `timeout`; one failure takes a server out
              (fall 1); reentry // timeout consecutive passes bring it back (rise), but the first
              pass after start brings it in (alpha, initial_rise 1); no warm-up jitter.
  keepalived  interval = delay_loop; fall = retry + 1; rise 1; delay_before_retry; warm-up random
              in [0, delay_loop] unless given; checkers start UP unless alpha. Per-checker defaults
              of retry / delay_before_retry: TCP 1 / 1 s, HTTP(S) 1 / 3 s, MISC 0 / 1 s
              (send_expect takes TCP's). MISC's misc_timeout defaults to delay_loop.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from userlb.health.spec import CHECK_TYPES, Check, ServiceHealth, parse_status_codes
from userlb.services import RealServer, VirtualService

# keepalived 2.2.7 checker defaults: type → (retry, delay_before_retry_s)
KEEPALIVED_RETRY = {"tcp": (1, 1.0), "http": (1, 3.0), "send_expect": (1, 1.0), "external": (0, 1.0)}
PRESET_PARAMS = {"nanny": ("timeout_s", "reentry_s"),
                 "keepalived": ("delay_loop_s", "retry", "connect_timeout_s")}
"""TOML keys a preset consumes (the rest of the table sets check fields directly)."""


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _only_fields(cls: type, knobs: dict[str, Any]) -> dict[str, Any]:
    names = _fields(cls)
    return {k: v for k, v in knobs.items() if k in names}


def nanny_knobs(cls: type, *, timeout_s: float = 10, reentry_s: float = 180) -> dict[str, Any]:
    """Fields that make a `cls` check judge like nanny with lvs.cf `timeout` and `reentry`."""
    rise = max(1, int(reentry_s // timeout_s))      # countThresh = reentry / timeout (C int division)
    knobs = {"interval_s": timeout_s, "connect_timeout_s": timeout_s, "io_timeout_s": timeout_s,
             "timeout_s": timeout_s, "fall": 1, "rise": rise, "alpha": True, "initial_rise": 1,
             "delay_before_retry_s": timeout_s, "warmup_s": 0.0}
    return _only_fields(cls, knobs)


def keepalived_knobs(cls: type, *, delay_loop_s: float = 60, retry: int | None = None,
                     connect_timeout_s: float = 5, kind: str | None = None) -> dict[str, Any]:
    """Fields that make a `cls` check time like keepalived's checker of the same kind."""
    kind = kind or cls.type
    default_retry, delay_before_retry_s = KEEPALIVED_RETRY["http" if kind == "https" else kind]
    retry = default_retry if retry is None else retry
    knobs = {"interval_s": delay_loop_s, "fall": retry + 1, "rise": 1, "alpha": False,
             "initial_rise": None, "delay_before_retry_s": delay_before_retry_s, "warmup_s": None,
             "connect_timeout_s": connect_timeout_s, "io_timeout_s": connect_timeout_s,
             "timeout_s": delay_loop_s}
    return _only_fields(cls, knobs)


PRESETS = {"nanny": nanny_knobs, "keepalived": keepalived_knobs}


def with_preset(check: Check, preset: str, **params: Any) -> Check:
    """A copy of `check` with the preset's knobs (they override the check's own)."""
    return dataclasses.replace(check, **PRESETS[preset](type(check), **params))


def check_from_table(table: Mapping[str, Any]) -> Check:
    """Build a check from a `[[service.real.check]]` table; raises ValueError naming a bad key.

    `type` picks the class; `preset` ("nanny" | "keepalived") with its own keys (PRESET_PARAMS)
    fills defaults; every other key must be a field of the class and wins over the preset.
    """
    items = dict(table)
    kind = items.pop("type", None)
    if kind not in CHECK_TYPES:
        raise ValueError(f"check type must be one of {sorted(CHECK_TYPES)}, not {kind!r}")
    cls = CHECK_TYPES[kind]
    preset = items.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
    params = {k: items.pop(k) for k in PRESET_PARAMS.get(preset, ()) if k in items}
    knobs = {}
    if preset == "keepalived":
        knobs = keepalived_knobs(cls, kind=kind, **params)
    elif preset == "nanny":
        knobs = nanny_knobs(cls, **params)
    unknown = sorted(set(items) - _fields(cls))
    if unknown or "tls" in items:
        raise ValueError(f"unknown key {(unknown or ['tls'])[0]!r} for check type {kind!r}")
    if "status_codes" in items:
        items["status_codes"] = parse_status_codes(items["status_codes"])
    if "args" in items:
        items["args"] = tuple(str(a) for a in items["args"])
    if kind in ("http", "https"):
        items["tls"] = kind == "https"
    try:
        return cls(**{**knobs, **items})
    except TypeError as exc:           # e.g. a missing required `program`
        raise ValueError(f"check type {kind!r}: {exc}") from None


HEALTH_KEYS = ("on_failure", "quorum", "hysteresis", "sorry_server")


def service_health_from_tables(service: VirtualService, health: Mapping[str, Any],
                               checks: Sequence[Sequence[Mapping[str, Any]]]) -> ServiceHealth:
    """Build a ServiceHealth from `[service.health]` and each real's `[[service.real.check]]` tables.

    `checks` is parallel to service.reals. `sorry_server` is an inline table with RealServer's
    keys (address, port, weight); its port defaults to the service's, as a real server's does.
    """
    unknown = sorted(set(health) - set(HEALTH_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in service.health")
    items = dict(health)
    sorry = items.pop("sorry_server", None)
    if sorry is not None:
        try:
            sorry = RealServer(**{"port": service.port, **sorry})
        except TypeError as exc:
            raise ValueError(f"service.health.sorry_server: {exc}") from None
    return ServiceHealth(service=service, sorry_server=sorry,
                         checks=tuple(tuple(check_from_table(t) for t in tables) for tables in checks),
                         **items)
