"""The HA state machine: one sans-I/O table for VRRPv3 and for the native heartbeat.

What it does: `Node` holds INIT/BACKUP/MASTER/FAULT and four deadlines. Every
input (start, an advert or heartbeat, the timer, fault/recover, shutdown) is
turned into an `Event`, looked up in `TRANSITIONS[(state, event)]`, and answered
with a list of actions (ha/actions.py) for the edge to perform. Time is always
passed in as `now` (seconds, any monotonic clock); `next_timer()` says when to
call `on_timer` next, and every answer ends with ArmTimer/CancelTimer when that
deadline moved.

What it does not do: sockets, clocks, ARP, VIP plumbing, authentication.
Heartbeats must come through heartbeat.HeartbeatReceiver.verify first, so a
forged or replayed one never reaches `on_advert` and changes nothing.

Mirrors: RFC 5798 §6.3-6.4 (Initialize/Backup/Master; Skew_Time,
Master_Down_Interval, Preempt_Mode, priority 0 and 255), keepalived for the
FAULT state, the priority-0 advert when a master goes to FAULT, and the GARP
schedule (garp_master_repeat 5, garp_master_delay 5 s, lower-priority burst),
and pulse (§1.8) for the heartbeat protocol: heartbeats every `keepalive_s`,
takeover after `deadtime_s` of silence, both nodes send, idle nodes elect.

The two protocols differ only in timers and in what a peer's message says:
  VRRP      adverts come from masters only; the down timer is
            down_timer_adverts x Master_Adver_Interval + Skew_Time, learned from adverts.
  heartbeat both nodes send every keepalive_s with their role; the down timer is
            deadtime_s; an idle (BACKUP) peer is an IDLE_* event, so two idle
            nodes elect at once instead of both activating as pulse does.

Failback: `failback=True` (default) is VRRP preemption: a returning node of
higher rank ignores the lower master's adverts, its down timer runs out and it
takes the VIPs; the old master hears it and yields. `failback=False` is
Piranha's behaviour (and keepalived's nopreempt): a backup accepts any live
master, so the returning primary stays backup. An owner (priority 255) always
preempts (RFC 5798 §6.1).

Split brain rule: when a partition heals and two masters hear each other,
exactly one stays master: the one with the higher priority, and on equal
priority the one with the higher primary address (VRRP: the IP source of the
advert; heartbeat: node_id, which is int(primary) by convention). This is RFC
5798 §6.4.3 and holds whatever `failback` says. The loser sends one last advert
at its own priority and releases its VIPs (pulse's "send one last heartbeat,
then deactivate"); the winner, hearing a lower-ranked master, answers with an
advert and a fresh GARP burst (keepalived's lower-priority GARP, issue #166).
So whichever advert crosses first, the caches the loser poisoned during the
partition are pointed back at the winner.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from userlb.ha import vrrp
from userlb.ha.actions import (Action, ArmTimer, CancelTimer, ClaimVips, ReleaseVips, SendAdvert,
                               SendGarp, StateChanged)
from userlb.ha.config import HaConfig, Protocol
from userlb.ha.heartbeat import Heartbeat, Role, vip_digest

State = Role
"""The node's states; the heartbeat carries them on the wire as its role."""


class Event(Enum):
    """Inputs of the table, after classification of adverts by rank."""

    START = "start"                  # start(), priority < 255
    START_OWNER = "start_owner"      # start(), priority 255
    RECOVER = "recover"              # on_recover(), priority < 255
    RECOVER_OWNER = "recover_owner"  # on_recover(), priority 255
    FAULT = "fault"                  # on_fault()
    SHUTDOWN = "shutdown"            # shutdown()
    DOWN_TIMER = "down_timer"        # Master_Down_Timer / deadtime ran out
    ADVERT_TIMER = "advert_timer"    # Adver_Timer / keepalive
    PEER_RELEASE = "peer_release"    # priority 0, or a heartbeat from an INIT/FAULT peer
    PEER_PREFERRED = "peer_preferred"  # an active peer we must let be master
    PEER_INFERIOR = "peer_inferior"  # an active peer we outrank
    IDLE_PREFERRED = "idle_preferred"  # heartbeat: an idle (BACKUP) peer that outranks us
    IDLE_INFERIOR = "idle_inferior"  # heartbeat: an idle peer we outrank


class Timer(Enum):
    """The deadlines a node may hold, in tie-break order."""

    DOWN = 0            # BACKUP: Master_Down_Timer or deadtime
    ADVERT = 1          # MASTER (and heartbeat BACKUP/FAULT): send the next advert
    GARP_BURST = 2      # MASTER: second GARP burst, garp_delay_s after the first
    GARP_REFRESH = 3    # MASTER: periodic GARP, every garp_refresh_s (off by default)


_I, _B, _M, _F = State.INIT, State.BACKUP, State.MASTER, State.FAULT
_E = Event

TRANSITIONS: dict[tuple[State, Event], tuple[State, str]] = {
    # (state, event): (next state, handler)           RFC 5798 section / source
    (_I, _E.START): (_B, "become_backup"),            # §6.4.1 priority < 255
    (_I, _E.START_OWNER): (_M, "become_master"),      # §6.4.1 priority 255
    (_I, _E.FAULT): (_F, "enter_fault"),              # keepalived: starts in FAULT
    (_B, _E.DOWN_TIMER): (_M, "become_master"),       # §6.4.2 / pulse "partner dead"
    (_B, _E.ADVERT_TIMER): (_B, "send_advert"),       # heartbeat only: backups send too
    (_B, _E.PEER_RELEASE): (_B, "arm_skew"),          # §6.4.2 priority 0 → Skew_Time
    (_B, _E.PEER_PREFERRED): (_B, "accept_master"),   # §6.4.2 learn interval, rearm
    (_B, _E.PEER_INFERIOR): (_B, "discard"),          # §6.4.2 preemption: timer runs out
    (_B, _E.IDLE_PREFERRED): (_B, "accept_master"),   # heartbeat: that peer will activate
    (_B, _E.IDLE_INFERIOR): (_M, "become_master"),    # heartbeat: nobody active, we rank first
    (_B, _E.FAULT): (_F, "enter_fault"),
    (_B, _E.SHUTDOWN): (_I, "stop"),                  # §6.4.2 Shutdown
    (_M, _E.ADVERT_TIMER): (_M, "send_advert"),       # §6.4.3
    (_M, _E.PEER_RELEASE): (_M, "send_advert"),       # §6.4.3 priority 0 → advert now
    (_M, _E.PEER_PREFERRED): (_B, "yield_vips"),      # §6.4.3 higher rank → Backup
    (_M, _E.PEER_INFERIOR): (_M, "reassert"),         # keepalived lower-prio advert + GARP
    (_M, _E.IDLE_PREFERRED): (_M, "discard"),         # heartbeat: it preempts by its own timer
    (_M, _E.IDLE_INFERIOR): (_M, "discard"),
    (_M, _E.FAULT): (_F, "resign"),                   # keepalived: priority-0 advert on FAULT
    (_M, _E.SHUTDOWN): (_I, "resign"),                # §6.4.3 Shutdown: priority 0
    (_F, _E.ADVERT_TIMER): (_F, "send_advert"),       # heartbeat only: "alive but unfit"
    (_F, _E.RECOVER): (_B, "become_backup"),
    (_F, _E.RECOVER_OWNER): (_M, "become_master"),
    (_F, _E.SHUTDOWN): (_I, "stop"),
}
"""Pairs not listed are ignored and counted in Node.counters as ignored:STATE:event."""


@dataclass(frozen=True)
class _Peer:
    priority: int
    rank: tuple[int, int]        # (priority, primary address or node id)
    role: Role
    interval_cs: int | None      # VRRP Max Adver Int; None for heartbeats


def describe() -> str:
    """TRANSITIONS as a Markdown table (docs are drawn from the table, as h11 does)."""
    rows = ["| state | event | next | handler |", "|---|---|---|---|"]
    for (state, event), (nxt, handler) in TRANSITIONS.items():
        rows.append(f"| {state.name} | {event.value} | {nxt.name} | {handler} |")
    return "\n".join(rows)


def make_advert(config: HaConfig, action: SendAdvert) -> vrrp.Advert:
    """The VRRPv3 advert the edge should encode for `action` (own interval, not the learned one)."""
    return vrrp.Advert(config.vrid, action.priority, config.advert_int_cs, config.vips, config.primary)


class Node:
    """One router's HA state; feed it events with `now`, perform what it returns."""

    def __init__(self, config: HaConfig) -> None:
        self.config = config
        self.state = State.INIT
        self.master_adver_int_cs = config.advert_int_cs
        self.counters: Counter[str] = Counter()
        self._timers: dict[Timer, float] = {}
        self._announced: float | None = None
        self._digest = vip_digest(config.vips)
        self._rank = (config.priority, int(config.primary))

    # ---- public inputs -------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Leave INIT: owner → MASTER at once, others → BACKUP waiting for the down timer."""
        return self._finish(self._fire(self._owner(_E.START, _E.START_OWNER), now))

    def on_advert(self, adv: vrrp.Advert | Heartbeat, now: float) -> list[Action]:
        """A decoded VRRP advert or a verified heartbeat from a peer."""
        peer = self._peer_view(adv)
        if peer is None:
            return self._finish([])
        return self._finish(self._fire(self._classify(peer), now, peer))

    def on_timer(self, now: float) -> list[Action]:
        """Run every deadline that is due at `now`, earliest first."""
        actions: list[Action] = []
        while due := [(at, t.value, t) for t, at in self._timers.items() if at <= now]:
            _, _, timer = min(due)
            del self._timers[timer]
            actions += self._on_due(timer, now)
        return self._finish(actions)

    def on_fault(self, now: float) -> list[Action]:
        """A tracked link or check failed: give up mastership, stop competing."""
        return self._finish(self._fire(_E.FAULT, now))

    def on_recover(self, now: float) -> list[Action]:
        """The fault cleared: compete again, as at start."""
        return self._finish(self._fire(self._owner(_E.RECOVER, _E.RECOVER_OWNER), now))

    def shutdown(self, now: float) -> list[Action]:
        """Stop: a master sends priority 0 (backups take over after Skew_Time) and releases."""
        return self._finish(self._fire(_E.SHUTDOWN, now))

    def next_timer(self) -> float | None:
        """When on_timer must next be called, or None."""
        return min(self._timers.values(), default=None)

    # ---- timers in seconds ----------------------------------------------------------------
    def advert_period_s(self) -> float:
        """Advertisement_Interval (VRRP) or keepalive (heartbeat)."""
        cfg = self.config
        return cfg.advert_int_cs / 100 if cfg.protocol is Protocol.VRRP else cfg.keepalive_s

    def skew_s(self) -> float:
        """RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256."""
        cfg = self.config
        interval_cs = (self.master_adver_int_cs if cfg.protocol is Protocol.VRRP
                       else cfg.keepalive_s * 100)
        return (256 - cfg.priority) * interval_cs / 256 / 100

    def down_interval_s(self) -> float:
        """Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time (VRRP), or deadtime."""
        cfg = self.config
        if cfg.protocol is Protocol.HEARTBEAT:
            return cfg.deadtime_s
        return cfg.down_timer_adverts * self.master_adver_int_cs / 100 + self.skew_s()

    # ---- classification ---------------------------------------------------------------------
    def _owner(self, normal: Event, owner: Event) -> Event:
        return owner if self.config.priority == 255 else normal

    def _peer_view(self, adv: vrrp.Advert | Heartbeat) -> _Peer | None:
        cfg = self.config
        if isinstance(adv, vrrp.Advert):
            ok = self._admit(cfg.protocol is Protocol.VRRP, adv.vrid == cfg.vrid,
                             adv.saddr != cfg.primary, set(adv.addrs) == set(cfg.vips))
            return _Peer(adv.priority, (adv.priority, int(adv.saddr)), Role.MASTER,
                         adv.max_advert_int_cs) if ok else None
        if isinstance(adv, Heartbeat):
            ok = self._admit(cfg.protocol is Protocol.HEARTBEAT, True,
                             adv.node_id != cfg.node_id, adv.vip_digest == self._digest)
            return _Peer(adv.priority, (adv.priority, adv.node_id), adv.role, None) if ok else None
        raise TypeError(f"not an advert: {adv!r}")

    def _admit(self, protocol_ok: bool, vrid_ok: bool, not_own: bool, vips_ok: bool) -> bool:
        for ok, name in ((protocol_ok, "wrong_protocol"), (vrid_ok, "other_vrid"),
                         (not_own, "own_advert")):
            if not ok:
                self.counters[name] += 1
                return False
        if not vips_ok:                  # RFC 5798 §7.1: MAY log; still processed
            self.counters["vip_mismatch"] += 1
        return True

    def _classify(self, peer: _Peer) -> Event:
        if peer.priority == 0 or peer.role in (Role.INIT, Role.FAULT):
            return _E.PEER_RELEASE
        if peer.role is Role.BACKUP:
            return _E.IDLE_PREFERRED if peer.rank > self._rank else _E.IDLE_INFERIOR
        if self.state is State.BACKUP:
            # §6.4.2: accept if Preempt_Mode is False or priority >= local; an owner always preempts.
            no_preempt = not self.config.failback and self.config.priority != 255
            preferred = no_preempt or peer.priority >= self.config.priority
        else:
            # §6.4.3: yield to higher priority, or equal priority and higher primary address.
            preferred = peer.rank > self._rank
        return _E.PEER_PREFERRED if preferred else _E.PEER_INFERIOR

    # ---- dispatch -----------------------------------------------------------------------------
    def _fire(self, event: Event, now: float, peer: _Peer | None = None) -> list[Action]:
        row = TRANSITIONS.get((self.state, event))
        if row is None:
            self.counters[f"ignored:{self.state.name}:{event.value}"] += 1
            return []
        target, handler_name = row
        handler: Callable[[float, _Peer | None, State], list[Action]] = getattr(self, "_h_" + handler_name)
        actions = handler(now, peer, target)
        old, self.state = self.state, target
        if old is not target:
            actions.insert(0, StateChanged(old, target, event.value))
        return actions

    def _on_due(self, timer: Timer, now: float) -> list[Action]:
        if timer is Timer.DOWN:
            return self._fire(_E.DOWN_TIMER, now)
        if timer is Timer.ADVERT:
            return self._fire(_E.ADVERT_TIMER, now)
        if timer is Timer.GARP_REFRESH:
            self._timers[Timer.GARP_REFRESH] = now + self.config.garp_refresh_s
            return [self._garp(self.config.garp_refresh_repeat)]
        return [self._garp(self.config.garp_repeat)]           # GARP_BURST, the second one

    def _finish(self, actions: list[Action]) -> list[Action]:
        at = self.next_timer()
        if at != self._announced:
            self._announced = at
            actions.append(CancelTimer() if at is None else ArmTimer(at))
        return actions

    # ---- handlers: (now, peer, target state) → actions; they set the timers --------------------
    def _garp(self, count: int) -> SendGarp:
        return SendGarp(self.config.vips, count, self.config.garp_interval_s)

    def _heartbeat(self) -> bool:
        return self.config.protocol is Protocol.HEARTBEAT

    def _h_become_backup(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        self.master_adver_int_cs = self.config.advert_int_cs          # §6.4.1
        self._timers = {Timer.DOWN: now + self.down_interval_s()}
        if not self._heartbeat():
            return []
        self._timers[Timer.ADVERT] = now + self.advert_period_s()
        return [SendAdvert(self.config.priority, State.BACKUP)]

    def _h_become_master(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        cfg = self.config
        self._timers = {Timer.ADVERT: now + self.advert_period_s()}
        actions: list[Action] = [SendAdvert(cfg.priority, State.MASTER), ClaimVips(cfg.vips)]
        if cfg.garp_repeat:
            actions.append(self._garp(cfg.garp_repeat))
            if cfg.garp_delay_s > 0:
                self._timers[Timer.GARP_BURST] = now + cfg.garp_delay_s
        if cfg.garp_refresh_s > 0:
            self._timers[Timer.GARP_REFRESH] = now + cfg.garp_refresh_s
        return actions

    def _h_send_advert(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        self._timers[Timer.ADVERT] = now + self.advert_period_s()
        priority = 0 if target is State.FAULT else self.config.priority
        return [SendAdvert(priority, target)]

    def _h_arm_skew(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        # §6.4.2: Master_Down_Timer = Skew_Time; never later than it already was.
        at = now + self.skew_s()
        self._timers[Timer.DOWN] = min(at, self._timers.get(Timer.DOWN, at))
        return []

    def _h_accept_master(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        if peer is not None and peer.interval_cs is not None:
            self.master_adver_int_cs = peer.interval_cs             # §6.4.2 learn the interval
        self._timers[Timer.DOWN] = now + self.down_interval_s()
        return []

    def _h_discard(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        self.counters["discarded"] += 1
        return []

    def _h_yield_vips(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        # §6.4.3: cancel Adver_Timer (a heartbeat backup keeps sending) and the GARP bursts.
        advert_at = self._timers.get(Timer.ADVERT)
        keep = self._heartbeat() and advert_at is not None
        self._timers = {Timer.ADVERT: advert_at} if keep else {}
        self._h_accept_master(now, peer, target)
        # pulse: "send one last heartbeat, then deactivate". The winner hears a lower-ranked
        # master and re-GARPs, even when its own advert reached us first (keepalived #166).
        return [SendAdvert(self.config.priority, State.MASTER), ReleaseVips(self.config.vips)]

    def _h_reassert(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        actions = self._h_send_advert(now, peer, target)
        if self.config.garp_lower_prio and self.config.garp_repeat:
            actions.append(self._garp(self.config.garp_repeat))
            if self.config.garp_delay_s > 0:
                self._timers[Timer.GARP_BURST] = now + self.config.garp_delay_s
        return actions

    def _h_resign(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        self._timers = {}
        if self._heartbeat() and target is State.FAULT:
            self._timers[Timer.ADVERT] = now + self.advert_period_s()
        return [SendAdvert(0, target), ReleaseVips(self.config.vips)]

    def _h_enter_fault(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        self._timers = {}
        if not self._heartbeat():
            return []
        self._timers[Timer.ADVERT] = now + self.advert_period_s()
        return [SendAdvert(0, State.FAULT)]

    def _h_stop(self, now: float, peer: _Peer | None, target: State) -> list[Action]:
        self._timers = {}
        return []


__all__ = ["Event", "HaConfig", "Node", "Protocol", "State", "Timer", "TRANSITIONS",
           "describe", "make_advert"]
