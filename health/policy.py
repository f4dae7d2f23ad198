"""Health policy: probe results in, HealthChanged / QuorumChanged events out. Pure; `now` is passed in.

What it does: keeps rise/fall counters per check (step()), judges a real server alive iff every one
of its checks is UP, derives each service's desired table (weight per real server, sorry server),
tracks quorum with hysteresis, and emits an event for every entry whose (up, weight) changed. It
schedules the next probe of each check (interval_s, or delay_before_retry_s while an UP check is
failing) through CheckSchedule. reload() carries check state across a configuration change.

What it mirrors: keepalived's tcp_epilog retry logic (fall = retry + 1, one pass brings a check
back), update_svr_checker_state (num_failed_checkers), update_quorum_state and
perform_quorum_state (sorry server in, live servers out); Piranha nanny's counters via the knobs
(presets.py). What it does not do: probe, sleep, or touch the engine. control.py applies events:

    HealthChanged(up=True,  weight=W)     add the destination, or set its weight to W
    HealthChanged(up=False, weight=0)     quiesce: keep it with weight 0 (existing flows drain)
    HealthChanged(up=False, weight=None)  remove the destination

Defects not copied (spec §9.5, §6): a failed or timed-out external check never counts as a pass;
a dynamic weight is only taken from a passing result (#2720); a reload keeps failing checks failing
and applies a changed configured weight (#381, #1720, #187).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from userlb.health.schedule import CheckSchedule
from userlb.health.spec import (Check, CheckBase, CheckId, ProbeResult, RealKey, ServiceHealth,
                                ServiceKey, probe_target, real_key)


@dataclass(frozen=True)
class HealthChanged:
    """A real server's entry in a service must change (see the module docstring for the meaning)."""

    service_key: ServiceKey
    real_key: RealKey
    up: bool
    """True: the server takes new flows with `weight`."""
    weight: int | None
    """The weight to set; 0 = quiesced; None = remove the destination."""
    reason: str


@dataclass(frozen=True)
class QuorumChanged:
    """A service gained or lost quorum (keepalived quorum_up / quorum_down)."""

    service_key: ServiceKey
    up: bool
    live_weight: int
    """Sum of the weights of the live real servers at the change."""
    reason: str


HealthEvent = HealthChanged | QuorumChanged
Entry = tuple[bool, int | None]
"""(up, weight) of one table entry, as HealthChanged carries it."""


@dataclass
class CheckState:
    """Mutable counters of one check."""

    up: bool
    """The check's verdict: UP or DOWN."""
    passes: int = 0
    """Consecutive passes (reset by a failure)."""
    fails: int = 0
    """Consecutive failures (reset by a pass)."""
    weight: int | None = None
    """Last dynamic weight reported by a passing probe; None = none reported."""
    detail: str = "not probed yet"
    """Detail of the last result."""


@dataclass
class _Slot:
    check: Check
    real_index: int
    host: str
    port: int
    state: CheckState = field(default_factory=lambda: CheckState(up=True))


def initial_state(check: CheckBase) -> CheckState:
    """UP unless alpha; with alpha, pre-count passes so that initial_rise passes bring it up."""
    if not check.alpha:
        return CheckState(up=True)
    return CheckState(up=False, passes=check.rise - (check.initial_rise or check.rise))


def step(check: CheckBase, state: CheckState, ok: bool) -> bool:
    """Count one result; True iff the check flipped between UP and DOWN.

    UP → DOWN after `fall` consecutive failures (keepalived: retry + 1; nanny: 1);
    DOWN → UP after `rise` consecutive passes (keepalived: 1; nanny: reentry // timeout).
    """
    if ok:
        state.fails = 0
        state.passes += 1
        if not state.up and state.passes >= check.rise:
            state.up = True
            return True
    else:
        state.passes = 0
        state.fails += 1
        if state.up and state.fails >= check.fall:
            state.up = False
            return True
    return False


def next_delay_s(check: CheckBase, state: CheckState) -> float:
    """delay_before_retry_s while an UP check is failing short of `fall`, else interval_s (tcp_epilog)."""
    if state.up and 0 < state.fails < check.fall:
        return check.delay_before_retry_s
    return check.interval_s


def quorum_next(up: bool, live_weight: int, quorum: int, hysteresis: int) -> bool:
    """keepalived update_quorum_state: gain at quorum + hysteresis; lose at 0 or below quorum − hysteresis."""
    if not up and live_weight >= quorum + hysteresis:
        return True
    if up and (live_weight == 0 or live_weight < quorum - hysteresis):
        return False
    return up


def first_run_window_s(check: CheckBase) -> float:
    """Upper bound of the random first-run offset (keepalived warmup; default delay_loop)."""
    return check.interval_s if check.warmup_s is None else check.warmup_s


class HealthPolicy:
    """All checks of a configuration: feed it results with `now`, get events back."""

    def __init__(self, services: Iterable[ServiceHealth], now: float, *, seed: int = 0,
                 max_concurrent: int | None = None) -> None:
        self.schedule = CheckSchedule(seed=seed, max_concurrent=max_concurrent)
        self._services: dict[ServiceKey, ServiceHealth] = {}
        self._slots: dict[CheckId, _Slot] = {}
        self._quorum_up: dict[ServiceKey, bool] = {}
        self._emitted: dict[ServiceKey, dict[RealKey, Entry]] = {}
        self._pending: list[HealthEvent] = []
        for svc in services:
            self._pending += self._add_service(svc, now, {})

    # -- queries -------------------------------------------------------------------------------

    def initial_events(self) -> list[HealthEvent]:
        """The starting table of every service as events (alpha servers down, sorry server if needed)."""
        events, self._pending = self._pending, []
        return events

    def check_ids(self) -> list[CheckId]:
        return list(self._slots)

    def target(self, check_id: CheckId) -> tuple[Check, str, int]:
        """(check, address, port) to probe for this check."""
        slot = self._slots[check_id]
        return slot.check, slot.host, slot.port

    def check_state(self, check_id: CheckId) -> CheckState:
        return self._slots[check_id].state

    def entry(self, service_key: ServiceKey, real: RealKey) -> Entry | None:
        """The (up, weight) last emitted for a real server (or the sorry server)."""
        return self._emitted[service_key].get(real)

    def quorum_up(self, service_key: ServiceKey) -> bool:
        return self._quorum_up[service_key]

    def next_due(self, check_id: CheckId) -> float:
        return self.schedule.next_due(check_id)

    def due(self, now: float) -> list[CheckId]:
        """Checks to start now (bounded by max_concurrent); see CheckSchedule.due."""
        return self.schedule.due(now)

    def next_deadline(self) -> float | None:
        return self.schedule.next_deadline()

    # -- inputs --------------------------------------------------------------------------------

    def observe(self, check_id: CheckId, result: ProbeResult, now: float) -> list[HealthEvent]:
        """Count one probe result at `now`; returns the events it causes (often none)."""
        slot = self._slots.get(check_id)
        if slot is None:               # the check went away in a reload while it ran
            return []
        check, state = slot.check, slot.state
        before = (state.up, state.weight)
        step(check, state, result.ok)
        if result.ok and result.weight is not None:
            state.weight = result.weight   # only a pass may set a dynamic weight (#2720)
        state.detail = result.detail
        self.schedule.finish(check_id, now + next_delay_s(check, state))
        if (state.up, state.weight) == before:
            # The service's table depends only on each check's verdict and weight: nothing
            # to recompute (this keeps a steady result O(1) in the service's size).
            return []
        verdict = "up" if state.up else "down"
        counts = f"{state.passes}/{check.rise} passes" if result.ok else f"{state.fails}/{check.fall} failures"
        reason = f"{check.label} {slot.host}:{slot.port}: {result.detail} ({counts}, check {verdict})"
        return self._reconcile(check_id[0], {check_id[1]: reason})

    def reload(self, services: Iterable[ServiceHealth], now: float) -> list[HealthEvent]:
        """Switch to a new configuration, keeping the state of every unchanged check.

        A check keeps its counters, verdict and due time when the same service and real server
        still have an equal check. Removed services and real servers produce no event (the config
        diff removes them); new ones start as at init; changed weights are emitted.
        """
        old_slots, old_due = self._slots, {cid: self.schedule.next_due(cid) for cid in self._slots}
        for cid in old_slots:
            self.schedule.remove(cid)
        self._slots = {}
        carried = {(cid[0], cid[1], slot.check): (slot.state, old_due[cid]) for cid, slot in old_slots.items()}
        old_services, self._services = self._services, {}
        events: list[HealthEvent] = []
        for svc in services:
            if svc.key not in old_services:
                self._quorum_up.pop(svc.key, None)
                self._emitted.pop(svc.key, None)
            before = dict(self._emitted.get(svc.key, {}))
            events += self._add_service(svc, now, carried)
            events += self._retire_sorry(old_services.get(svc.key), svc, before)
        for key in set(old_services) - set(self._services):
            self._quorum_up.pop(key, None)
            self._emitted.pop(key, None)
        return events

    # -- internals -----------------------------------------------------------------------------

    def _retire_sorry(self, old: ServiceHealth | None, svc: ServiceHealth,
                      before: dict[RealKey, Entry]) -> list[HealthEvent]:
        """A sorry server dropped by a reload while in the table is removed (no config diff knows it)."""
        if old is None or old.sorry_server is None:
            return []
        key = real_key(old.sorry_server)
        if key in self._emitted[svc.key] or before.get(key, (False, None)) == (False, None):
            return []
        return [HealthChanged(svc.key, key, False, None, "reload: sorry server no longer configured")]

    def _add_service(self, svc: ServiceHealth, now: float, carried: dict) -> list[HealthEvent]:
        self._services[svc.key] = svc
        for index, real in enumerate(svc.service.reals):
            for number, check in enumerate(svc.checks_of(index)):
                cid: CheckId = (svc.key, real_key(real), number)
                host, port = probe_target(check, real, svc.service)
                state, due = carried.pop((cid[0], cid[1], check), (None, None))
                self._slots[cid] = _Slot(check, index, host, port, state or initial_state(check))
                if due is None:
                    self.schedule.add(cid, now, first_run_window_s(check))
                else:
                    self.schedule.keep(cid, due)
        if svc.key in self._quorum_up:
            return self._reconcile(svc.key, {}, default_reason="reload")
        live = self._live_weight(svc)
        # keepalived set_quorum_states, then update_quorum_state(init=true)
        self._quorum_up[svc.key] = live >= svc.quorum + svc.hysteresis
        # a sorry server starts out of the table: no event unless quorum is lost at start
        self._emitted[svc.key] = {real_key(svc.sorry_server): (False, None)} if svc.sorry_server else {}
        return self._reconcile(svc.key, {}, default_reason="initial state", initial=True)

    def _server_health(self, svc: ServiceHealth) -> dict[RealKey, tuple[bool, int]]:
        """Real key → (alive, effective weight). Alive iff every check is UP."""
        health: dict[RealKey, tuple[bool, int]] = {}
        for index, real in enumerate(svc.service.reals):
            states = [self._slots[(svc.key, real_key(real), n)].state
                      for n in range(len(svc.checks_of(index)))]
            dynamic = [s.weight for s in states if s.weight is not None]
            # several dynamic checks: the smallest weight wins (keepalived applies only a sole one)
            weight = min(dynamic) if dynamic else real.weight
            health[real_key(real)] = (all(s.up for s in states), weight)
        return health

    def _live_weight(self, svc: ServiceHealth) -> int:
        return sum(w for alive, w in self._server_health(svc).values() if alive)

    def _desired(self, svc: ServiceHealth, health: dict[RealKey, tuple[bool, int]],
                 quorum_up: bool) -> dict[RealKey, Entry]:
        down: Entry = (False, 0) if svc.on_failure == "quiesce" else (False, None)
        serving = quorum_up or svc.sorry_server is None
        desired = {rk: ((True, w) if alive and serving else down) for rk, (alive, w) in health.items()}
        if svc.sorry_server is not None:
            sorry = svc.sorry_server
            desired[real_key(sorry)] = (False, None) if quorum_up else (True, sorry.weight)
        return desired

    def _reconcile(self, skey: ServiceKey, causes: dict[RealKey, str], default_reason: str = "",
                   initial: bool = False) -> list[HealthEvent]:
        """Recompute the service's desired table and emit what changed since the last emission."""
        svc = self._services[skey]
        health = self._server_health(svc)
        live = sum(w for alive, w in health.values() if alive)
        was_up = self._quorum_up[skey]
        quorum_up = quorum_next(was_up, live, svc.quorum, svc.hysteresis)
        self._quorum_up[skey] = quorum_up
        change = ("starting with quorum " + ("up" if quorum_up else "down") if initial
                  else "quorum " + ("gained" if quorum_up else "lost"))
        quorum_text = f"{change}: live weight {live}, quorum {svc.quorum} hysteresis {svc.hysteresis}"
        fallback = default_reason or (quorum_text if quorum_up != was_up else "changed")
        desired = self._desired(svc, health, quorum_up)
        emitted = {rk: e for rk, e in self._emitted[skey].items() if rk in desired}  # drop removed
        real_events: list[HealthEvent] = []
        sorry_events: list[HealthEvent] = []
        for rk, entry in desired.items():
            if emitted.get(rk) != entry:
                reason = causes.get(rk) or (quorum_text if rk not in health else fallback)
                bucket = real_events if rk in health else sorry_events
                bucket.append(HealthChanged(skey, rk, entry[0], entry[1], reason))
                emitted[rk] = entry
        self._emitted[skey] = emitted
        quorum_events: list[HealthEvent] = []
        if quorum_up != was_up or initial:
            quorum_events.append(QuorumChanged(skey, quorum_up, live, quorum_text))
        return real_events + quorum_events + sorry_events
