"""EDGE: runs the HA state machine (ha/fsm.Node) on the daemon's asyncio loop.

What it does: feeds the node what arrives on the HA sockets (VRRPv3 adverts,
or heartbeats after HMAC and replay checks) and its timer, and performs the
actions it returns, in order:
  ClaimVips   → plumbing.claim(): VIP routes and proxy ARP, the floating gateway
  ReleaseVips → plumbing.release(), and pending GARPs are cancelled
  SendGarp    → gratuitous ARPs from the real MAC: the VIPs on the public
                interface, the gateway (nat_router) on the private one
  SendAdvert  → a VRRPv3 advert, or a heartbeat, on every advert path
  ArmTimer    → loop.call_at(at, …) on the loop's monotonic clock, the `now` given to the node
It also runs the connection sync (ha/syncstream.py) and, on stop(), has the
node shut down: a master sends priority 0 and releases the VIPs.

What it does not do: decide anything (ha/fsm.py does), parse or build packets
(ha/vrrp.py, ha/heartbeat.py, ha/garp.py), or touch sockets directly (ha/net.py).
Rejected heartbeats and dropped adverts are counted here and go no further.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address

from userlb.ha import fsm, heartbeat, net, vrrp
from userlb.ha.actions import (ArmTimer, CancelTimer, ClaimVips, ReleaseVips, SendAdvert,
                               SendGarp, StateChanged)
from userlb.ha.config import HaConfig, Protocol
from userlb.ha.syncstream import SyncStream

log = logging.getLogger("userlb.ha")

TRANSITIONS_KEPT = 20


class HaRunner:
    """One router's HA: `await start()`, then `await stop()` at shutdown; `status()` any time."""

    def __init__(self, config: HaConfig, plumbing, datapath, link=None) -> None:
        self.config = config
        self.plumbing = plumbing
        self.datapath = datapath
        self.link = link
        self.node = fsm.Node(config)
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.transitions: deque = deque(maxlen=TRANSITIONS_KEPT)
        self.sync: SyncStream | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._garps: list[asyncio.TimerHandle] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ha-netlink")
        self._since = 0.0
        self.receiver = self.sender = None
        if config.protocol is Protocol.HEARTBEAT:
            self._heartbeat_endpoints(config)

    def _heartbeat_endpoints(self, config: HaConfig) -> None:
        peers = None if config.peer is None else {int(config.peer)}
        self.receiver = heartbeat.HeartbeatReceiver(config.key, config.node_id, peers)
        # boot id = start time in s; the first seq = start time in µs, so a restart within the
        # same second still numbers above everything its previous life sent (no persisted state).
        self.sender = heartbeat.HeartbeatSender(config.key, config.node_id,
                                                int(time.time()) & 0xFFFFFFFF, config.vips,
                                                first_seq=time.time_ns() // 1000)
        self._sources = frozenset(a for a in (config.peer, config.peer_private) if a is not None)

    # ---- life cycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.link is None:
            self.link = net.open_link(self.config)
        for kind, sock in self.link.readers():
            self.loop.add_reader(sock.fileno(), self._on_readable, kind, sock)
        if self.config.sync and self.link.sync is not None:
            self.sync = SyncStream(self.config, self.link, self.datapath, lambda: self.node.state)
            self.sync.start()
        self._since = self.loop.time()
        self._apply(self.node.start(self.loop.time()))
        log.info("HA started: %s, priority %d, %s", self.config.protocol.value,
                 self.config.priority, self.node.state.name)

    async def stop(self) -> None:
        """Shut the node down (priority 0 and release when master), then close everything."""
        if self.loop is None:
            return
        self._apply(self.node.shutdown(self.loop.time()))
        self._cancel_timer()
        if self.sync is not None:
            await self.sync.stop()
        for _, sock in self.link.readers():
            self.loop.remove_reader(sock.fileno())
        self.link.close()
        self._pool.shutdown()
        self.loop = None

    # ---- inputs ---------------------------------------------------------------------------------
    def _on_readable(self, kind: str, sock) -> None:
        for data, source in net.drain(sock):
            self.on_datagram(kind, data, IPv4Address(source[0]))

    def on_datagram(self, kind: str, data: bytes, source: IPv4Address) -> None:
        """One datagram from an "advert" (VRRP or heartbeat) or "sync" socket."""
        now = self.loop.time()
        if kind == "sync":
            if self.sync is not None:
                self.sync.on_datagram(data, source, now)
        elif self.config.protocol is Protocol.VRRP:
            self._on_vrrp(data, now)
        else:
            self._on_heartbeat(data, source, now)

    def _on_vrrp(self, data: bytes, now: float) -> None:
        try:
            adv = vrrp.decode_ip(data)
        except vrrp.VrrpError as err:
            self.dropped[err.reason.name.lower()] += 1
            return
        self.counters["adverts_received"] += 1
        self.counters["release_adverts_received"] += adv.priority == 0
        self._apply(self.node.on_advert(adv, now))

    def _on_heartbeat(self, data: bytes, source: IPv4Address, now: float) -> None:
        if self._sources and source not in self._sources:
            self.dropped["unknown_source"] += 1     # pulse: only the partner's addresses count
            return
        result = self.receiver.verify(data)
        if isinstance(result, heartbeat.RejectReason):
            log.debug("heartbeat from %s rejected: %s", source, result.name)
            return
        self.counters["adverts_received"] += 1
        self.counters["release_adverts_received"] += result.priority == 0
        self._apply(self.node.on_advert(result, now))

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._apply(self.node.on_timer(self.loop.time()))

    # ---- actions --------------------------------------------------------------------------------
    def _apply(self, actions: list) -> None:
        for action in actions:
            try:
                self._perform(action)
            except Exception:                 # one failed action must not stop the others
                self.counters["action_errors"] += 1
                log.exception("HA action %r failed", action)
        self._rearm()

    def _perform(self, action) -> None:
        if isinstance(action, StateChanged):
            self._state_changed(action)
        elif isinstance(action, SendAdvert):
            self._send_advert(action)
        elif isinstance(action, ClaimVips):
            self._netlink(self.plumbing.claim)
            self.counters["claims"] += 1
        elif isinstance(action, ReleaseVips):
            for handle in self._garps:
                handle.cancel()
            self._garps.clear()
            self._netlink(self.plumbing.release)
            self.counters["releases"] += 1
        elif isinstance(action, SendGarp):
            self._garp(action)
        elif isinstance(action, ArmTimer):
            self._arm(action.at)
        elif isinstance(action, CancelTimer):
            self._cancel_timer()

    def _netlink(self, fn) -> None:
        # pyroute2's synchronous API runs an event loop of its own, which cannot run on a
        # thread whose loop is running: call it on one helper thread and wait (milliseconds),
        # so the claim is complete before the GARPs that follow it go out.
        self._pool.submit(fn).result()

    def _state_changed(self, action: StateChanged) -> None:
        log.info("HA %s → %s (%s)", action.old.name, action.new.name, action.event)
        self._since = self.loop.time()
        self.transitions.append({"at": time.time(), "old": action.old.name,
                                 "new": action.new.name, "event": action.event})
        if action.new is fsm.State.MASTER and self.sync is not None:
            self.sync.became_master()

    def _send_advert(self, action: SendAdvert) -> None:
        if self.config.protocol is Protocol.VRRP:
            failed = self.link.send_vrrp(fsm.make_advert(self.config, action))
        else:
            failed = self.link.send_heartbeat(
                lambda: self.sender.build(action.role, action.priority, time.time()))
        self.counters["adverts_sent"] += 1
        self.counters["advert_send_errors"] += failed

    def _garp(self, action: SendGarp) -> None:
        gateway = self.config.nat_router.ip if self.config.nat_router is not None else None
        groups: dict[str, list[IPv4Address]] = {}
        for vip in action.vips:
            side = self.config.private_interface if vip == gateway else self.config.interface
            groups.setdefault(side or self.config.interface, []).append(vip)
        for i in range(action.count):
            if i == 0 or action.interval_s <= 0:
                self._send_garp(groups)
            else:
                self._garps.append(self.loop.call_later(i * action.interval_s,
                                                        self._send_garp, groups))

    def _send_garp(self, groups: dict[str, list[IPv4Address]]) -> None:
        for ifname, vips in groups.items():
            self.counters["garp_errors"] += self.link.send_garp(ifname, vips)
            self.counters["garps_sent"] += len(vips)

    # ---- the one timer --------------------------------------------------------------------------
    def _arm(self, at: float) -> None:
        self._cancel_timer()
        self._timer, self._timer_at = self.loop.call_at(at, self._on_timer), at

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    def _rearm(self) -> None:
        # A loop timer may fire a little before `at` (millisecond rounding); the node then has
        # nothing due and announces nothing, so re-arm from next_timer() whenever it differs.
        if self.loop is None:
            return
        at = self.node.next_timer()
        if at is None:
            self._cancel_timer()
        elif at != self._timer_at:
            self._arm(at)

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict:
        cfg = self.config
        out = {"protocol": cfg.protocol.value, "state": self.node.state.name,
               "priority": cfg.priority, "primary": str(cfg.primary),
               "vips": [str(v) for v in cfg.vips], "claimed": bool(self.plumbing.claimed),
               "since_s": round(self.loop.time() - self._since, 3) if self.loop else 0.0,
               "failback": cfg.failback, "counters": dict(self.counters),
               "fsm": dict(self.node.counters), "dropped": dict(self.dropped),
               "transitions": list(self.transitions)}
        if cfg.protocol is Protocol.VRRP:
            out["vrid"] = cfg.vrid
            out["advert_int_s"] = cfg.advert_int_cs / 100
        else:
            out["keepalive_s"], out["deadtime_s"] = cfg.keepalive_s, cfg.deadtime_s
            out["heartbeat"] = {"accepted": self.receiver.accepted,
                                "rejected": {r.name.lower(): n
                                             for r, n in self.receiver.rejected.items()}}
        out["sync"] = self.sync.status() if self.sync is not None else {"enabled": False}
        if self.link is not None:
            out["macs"] = {name: self.link.mac(name) for name in self.link.garps}
        return out
