"""ha/fsm.py: tables of event sequences → actions, and a two-node pair through the real codecs.

Timer values are binary fractions (skew = (256 - prio) * interval / 256), so the
expected deadlines below are exact floats.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from userlb.ha import heartbeat as hbm
from userlb.ha import vrrp
from userlb.ha.actions import (ArmTimer, CancelTimer, ClaimVips, ReleaseVips, SendAdvert, SendGarp,
                               StateChanged)
from userlb.ha.config import HaConfig, Protocol
from userlb.ha.fsm import TRANSITIONS, Event, Node, State, describe, make_advert
from userlb.ha.heartbeat import Heartbeat, HeartbeatReceiver, HeartbeatSender, Role, vip_digest

I, B, M, F = State.INIT, State.BACKUP, State.MASTER, State.FAULT
VIPS = ("198.18.0.100", "198.18.0.101")
V = tuple(IPv4Address(v) for v in VIPS)
CLAIM, RELEASE, GARP = ClaimVips(V), ReleaseVips(V), SendGarp(V, 5, 0.0)
ME, PEER = "10.0.0.1", "10.0.0.2"
HB = Protocol.HEARTBEAT


def adv(prio: int, saddr: str = PEER, interval_cs: int = 100, vrid: int = 1) -> vrrp.Advert:
    return vrrp.Advert(vrid, prio, interval_cs, VIPS, saddr)


def beat(prio: int, role: Role = Role.MASTER, node: str = PEER, seq: int = 1) -> Heartbeat:
    return Heartbeat(int(IPv4Address(node)), role, prio, 1, seq, 0, vip_digest(VIPS))


def sc(old, new, event):
    return StateChanged(old, new, event)


def ad(prio, role=M):
    return SendAdvert(prio, role)


# Each case: (description, config overrides, [(now, call, argument, expected actions)]).
# call is start | timer | advert | fault | recover | shutdown.
VRRP_CASES = [
    ("backup waits Master_Down_Interval = 3*1 s + 156/256 s", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
    ]),
    ("owner (255) becomes master at once; second GARP burst 5 s later", {"priority": 255}, [
        (0.0, "start", None, [sc(I, M, "start_owner"), ad(255), CLAIM, GARP, ArmTimer(1.0)]),
        (1.0, "timer", None, [ad(255), ArmTimer(2.0)]),
        (5.0, "timer", None, [ad(255), GARP, ArmTimer(6.0)]),
    ]),
    ("takeover after the master goes silent", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (1.0, "advert", adv(150), [ArmTimer(4.609375)]),
        (2.0, "advert", adv(150), [ArmTimer(5.609375)]),
        (5.6, "timer", None, []),
        (5.609375, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(6.609375)]),
    ]),
    ("backup learns the master's advert interval", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (1.0, "advert", adv(150, interval_cs=200), [ArmTimer(1.0 + 6.0 + 1.21875)]),
    ]),
    ("priority 0 from the master: take over after Skew_Time", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (1.0, "advert", adv(150), [ArmTimer(4.609375)]),
        (2.0, "advert", adv(0), [ArmTimer(2.609375)]),
        (2.609375, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(3.609375)]),
    ]),
    ("master shutdown sends priority 0 and releases", {"priority": 255}, [
        (0.0, "start", None, [sc(I, M, "start_owner"), ad(255), CLAIM, GARP, ArmTimer(1.0)]),
        (0.5, "shutdown", None, [sc(M, I, "shutdown"), SendAdvert(0, I), RELEASE, CancelTimer()]),
        (9.0, "advert", adv(150), []),
    ]),
    ("failback on: higher backup ignores a lower master and preempts", {"priority": 200}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.21875)]),
        (1.0, "advert", adv(100), []),
        (2.0, "advert", adv(100), []),
        (3.21875, "timer", None, [sc(B, M, "down_timer"), ad(200), CLAIM, GARP, ArmTimer(4.21875)]),
    ]),
    ("failback off: higher backup keeps accepting the lower master", {"priority": 200, "failback": False}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.21875)]),
        (1.0, "advert", adv(100), [ArmTimer(4.21875)]),
        (2.0, "advert", adv(100), [ArmTimer(5.21875)]),
        (5.0, "timer", None, []),
    ]),
    ("master yields to a higher priority: one last advert at its own priority, then release", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (3.609375, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(4.609375)]),
        (4.0, "advert", adv(200), [sc(M, B, "peer_preferred"), ad(100), RELEASE, ArmTimer(7.609375)]),
        (8.0, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(9.0)]),
    ]),
    ("split brain heal, we win on priority: advert and GARP burst", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (3.609375, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(4.609375)]),
        (4.0, "advert", adv(50), [ad(100), GARP, ArmTimer(5.0)]),
        (9.0, "timer", None, [ad(100), GARP, ArmTimer(10.0)]),
    ]),
    ("split brain heal, equal priority: higher primary address wins", {"primary": "10.0.0.1"}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (3.609375, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(4.609375)]),
        (4.0, "advert", adv(100, saddr="10.0.0.0"), [ad(100), GARP, ArmTimer(5.0)]),
        (4.5, "advert", adv(100, saddr="10.0.0.2"), [sc(M, B, "peer_preferred"), ad(100), RELEASE,
                                                     ArmTimer(8.109375)]),
    ]),
    ("owner preempts even with failback off", {"priority": 255, "failback": False}, [
        (0.0, "start", None, [sc(I, M, "start_owner"), ad(255), CLAIM, GARP, ArmTimer(1.0)]),
        (0.5, "advert", adv(255, saddr="10.0.0.9"), [sc(M, B, "peer_preferred"), ad(255), RELEASE,
                                                     ArmTimer(3.50390625)]),
        (1.0, "advert", adv(100), []),
    ]),
    ("fault releases with priority 0; recovery starts as backup", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (3.609375, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(4.609375)]),
        (4.0, "fault", None, [sc(M, F, "fault"), SendAdvert(0, F), RELEASE, CancelTimer()]),
        (4.5, "advert", adv(0), []),
        (5.0, "recover", None, [sc(F, B, "recover"), ArmTimer(8.609375)]),
    ]),
    ("fault before start holds until recovery", {}, [
        (0.0, "fault", None, [sc(I, F, "fault")]),
        (0.0, "start", None, []),
        (1.0, "recover", None, [sc(F, B, "recover"), ArmTimer(4.609375)]),
    ]),
    ("adverts that are not for us change nothing", {}, [
        (0.0, "advert", adv(150), []),
        (0.0, "start", None, [sc(I, B, "start"), ArmTimer(3.609375)]),
        (1.0, "advert", adv(150, vrid=2), []),
        (1.0, "advert", adv(150, saddr=ME), []),
        (1.0, "advert", beat(150), []),
    ]),
]

HEARTBEAT_CASES = [
    ("backup start sends a BACKUP heartbeat every keepalive", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(100, B), ArmTimer(2.0)]),
        (2.0, "timer", None, [ad(100, B), ArmTimer(4.0)]),
    ]),
    ("takeover after deadtime without a valid heartbeat", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(100, B), ArmTimer(2.0)]),
        (1.0, "advert", beat(150), []),
        (2.0, "timer", None, [ad(100, B), ArmTimer(4.0)]),
        (4.0, "timer", None, [ad(100, B), ArmTimer(6.0)]),
        (6.0, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(8.0)]),
    ]),
    ("failback on: returning primary takes over after deadtime", {"priority": 200}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(200, B), ArmTimer(2.0)]),
        (1.0, "advert", beat(100), []),
        (2.0, "timer", None, [ad(200, B), ArmTimer(4.0)]),
        (4.0, "timer", None, [ad(200, B), ArmTimer(5.0)]),
        (5.0, "timer", None, [sc(B, M, "down_timer"), ad(200), CLAIM, GARP, ArmTimer(7.0)]),
    ]),
    ("failback off: returning primary stays backup", {"priority": 200, "failback": False}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(200, B), ArmTimer(2.0)]),
        (1.0, "advert", beat(100), []),
        (2.0, "timer", None, [ad(200, B), ArmTimer(4.0)]),
        (4.0, "timer", None, [ad(200, B), ArmTimer(6.0)]),
        (4.5, "advert", beat(100), []),
        (6.0, "timer", None, [ad(200, B), ArmTimer(8.0)]),
        (8.0, "timer", None, [ad(200, B), ArmTimer(9.5)]),
    ]),
    ("cold start: both idle, the higher rank activates at once", {"priority": 150}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(150, B), ArmTimer(2.0)]),
        (0.5, "advert", beat(100, Role.BACKUP), [sc(B, M, "idle_inferior"), ad(150), CLAIM, GARP,
                                                 ArmTimer(2.5)]),
    ]),
    ("cold start: an idle higher peer gets deadtime to activate, then we do", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(100, B), ArmTimer(2.0)]),
        (0.5, "advert", beat(150, Role.BACKUP), []),
        (2.0, "timer", None, [ad(100, B), ArmTimer(4.0)]),
        (4.0, "timer", None, [ad(100, B), ArmTimer(5.5)]),
        (5.5, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(7.5)]),
    ]),
    ("peer in FAULT: take over after skew", {}, [
        (0.0, "start", None, [sc(I, B, "start"), ad(100, B), ArmTimer(2.0)]),
        (1.0, "advert", beat(0, Role.FAULT), []),
        (2.0, "timer", None, [ad(100, B), ArmTimer(2.21875)]),
        (2.21875, "timer", None, [sc(B, M, "down_timer"), ad(100), CLAIM, GARP, ArmTimer(4.21875)]),
    ]),
    ("FAULT keeps sending priority-0 heartbeats", {}, [
        (0.0, "fault", None, [sc(I, F, "fault"), SendAdvert(0, F), ArmTimer(2.0)]),
        (2.0, "timer", None, [SendAdvert(0, F), ArmTimer(4.0)]),
        (3.0, "advert", beat(150), []),
    ]),
]


def _call(node: Node, now, call, arg):
    if call == "advert":
        return node.on_advert(arg, now)
    if call == "timer":
        return node.on_timer(now)
    return {"start": node.start, "fault": node.on_fault, "recover": node.on_recover,
            "shutdown": node.shutdown}[call](now)


def _run_case(config, steps):
    node = Node(config)
    for now, call, arg, expected in steps:
        assert _call(node, now, call, arg) == expected, f"t={now} {call}"
    return node


@pytest.mark.parametrize("desc,overrides,steps", VRRP_CASES, ids=[c[0] for c in VRRP_CASES])
def test_vrrp_sequences(desc, overrides, steps):
    _run_case(HaConfig(**{"primary": ME, "vips": VIPS, **overrides}), steps)


@pytest.mark.parametrize("desc,overrides,steps", HEARTBEAT_CASES, ids=[c[0] for c in HEARTBEAT_CASES])
def test_heartbeat_sequences(desc, overrides, steps):
    _run_case(HaConfig(**{"primary": ME, "vips": VIPS, "protocol": HB, **overrides}), steps)


def test_ignored_inputs_are_counted():
    node = Node(HaConfig(ME, VIPS))
    node.on_advert(adv(150), 0.0)
    node.start(0.0)
    node.on_advert(adv(150, vrid=9), 1.0)
    node.on_advert(adv(150, saddr=ME), 1.0)
    node.on_advert(vrrp.Advert(1, 150, 100, ["203.0.113.1"], PEER), 1.0)
    assert node.counters == {"ignored:INIT:peer_preferred": 1, "other_vrid": 1, "own_advert": 1,
                             "vip_mismatch": 1}


def test_every_handler_exists_and_describe_lists_every_row():
    node = Node(HaConfig(ME, VIPS))
    for _, handler in TRANSITIONS.values():
        assert callable(getattr(node, "_h_" + handler))
    assert describe().count("\n") == len(TRANSITIONS) + 1


def test_make_advert_uses_own_interval():
    config = HaConfig(ME, VIPS, vrid=51, advert_int_cs=50)
    assert make_advert(config, SendAdvert(0, I)) == vrrp.Advert(51, 0, 50, VIPS, ME)


@pytest.mark.parametrize("kwargs", [dict(priority=0), dict(priority=256), dict(vips=()),
                                    dict(vrid=0), dict(advert_int_cs=0), dict(deadtime_s=2.0),
                                    dict(garp_repeat=-1), dict(garp_delay_s=-1.0)])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        HaConfig(**{"primary": ME, "vips": VIPS, **kwargs})


def test_forged_or_replayed_heartbeats_change_nothing():
    key, other = b"k" * 32, b"z" * 32
    node = Node(HaConfig(ME, VIPS, protocol=HB, priority=100))
    rx = HeartbeatReceiver(key, own_node_id=int(IPv4Address(ME)), peers={int(IPv4Address(PEER))})
    peer = HeartbeatSender(key, int(IPv4Address(PEER)), boot_id=5, vips=VIPS)
    node.start(0.0)
    genuine = peer.build(Role.MASTER, 150, 1.0)
    assert isinstance(rx.verify(genuine), Heartbeat)
    node.on_advert(hbm.decode(genuine, key), 1.0)
    before = (node.state, node.next_timer(), dict(node.counters), rx.replay.snapshot())
    release = hbm.Heartbeat(int(IPv4Address(PEER)), Role.FAULT, 0, 5, 99, 0, vip_digest(VIPS))
    attacks = [
        hbm.encode(release, other),                                       # forged: wrong key
        genuine[:40] + bytes(32),                                         # forged: no MAC
        genuine,                                                          # replayed
        hbm.encode(hbm.Heartbeat(*[getattr(release, f) for f in ("node_id", "role", "priority")],
                                 4, 1000, 0, vip_digest(VIPS)), key),     # authentic, old boot
        hbm.encode(hbm.Heartbeat(int(IPv4Address(ME)), Role.FAULT, 0, 9, 1, 0,
                                 vip_digest(VIPS)), key),                 # our own id
    ]
    for data in attacks:
        verdict = rx.verify(data)
        assert isinstance(verdict, hbm.RejectReason)
        # the edge passes only Heartbeat objects on; a rejection never reaches the node
    assert (node.state, node.next_timer(), dict(node.counters), rx.replay.snapshot()) == before
    assert sum(rx.rejected.values()) == len(attacks)


# ---- two nodes wired through the real codecs ----------------------------------------------------
class Pair:
    """Two nodes, an in-memory link that can be cut, and who holds the VIPs."""

    KEY = b"pair-test-key-0123456789"

    def __init__(self, configs: dict[str, HaConfig]) -> None:
        self.configs = configs
        self.nodes = {name: Node(c) for name, c in configs.items()}
        self.holds = {name: False for name in configs}
        self.garps: list[tuple[float, str]] = []
        self.link_up = True
        self.boot = {name: 1 for name in configs}
        self.senders = {n: self._sender(n) for n in configs}
        self.receivers = {n: HeartbeatReceiver(self.KEY, c.node_id) for n, c in configs.items()}
        self.queue: list[tuple[str, bytes]] = []

    def _sender(self, name):
        c = self.configs[name]
        return HeartbeatSender(self.KEY, c.node_id, self.boot[name], c.vips)

    def apply(self, name, actions, now):
        for act in actions:
            if isinstance(act, ClaimVips):
                self.holds[name] = True
            elif isinstance(act, ReleaseVips):
                self.holds[name] = False
            elif isinstance(act, SendGarp):
                self.garps.append((now, name))
            elif isinstance(act, SendAdvert) and self.link_up:
                self.queue.append((name, self._encode(name, act, now)))
        while self.queue:
            sender, data = self.queue.pop(0)
            for other in self.nodes:
                if other != sender:
                    self.apply(other, self.nodes[other].on_advert(self._decode(other, data), now), now)

    def _encode(self, name, act, now):
        c = self.configs[name]
        if c.protocol is Protocol.VRRP:
            return vrrp.encode_ip(make_advert(c, act))
        return self.senders[name].build(act.role, act.priority, now)

    def _decode(self, name, data):
        if self.configs[name].protocol is Protocol.VRRP:
            return vrrp.decode_ip(data)
        result = self.receivers[name].verify(data)
        assert isinstance(result, Heartbeat), result
        return result

    def run_until(self, end):
        while True:
            due = [(n.next_timer(), name) for name, n in self.nodes.items() if n.next_timer() is not None]
            if not due or min(due)[0] > end:
                return
            at, name = min(due)
            self.apply(name, self.nodes[name].on_timer(at), at)

    def restart(self, name, now):
        """A new process: fresh state, a higher boot id, then start()."""
        self.nodes[name] = Node(self.configs[name])
        self.boot[name] += 1
        self.senders[name] = self._sender(name)
        self.apply(name, self.nodes[name].start(now), now)

    def holders(self):
        return sorted(name for name, held in self.holds.items() if held)


def _pair(protocol, prio_a=200, prio_b=100, failback=True):
    kw = dict(vips=VIPS, protocol=protocol, failback=failback)
    return Pair({"a": HaConfig("10.0.0.1", priority=prio_a, **kw),
                 "b": HaConfig("10.0.0.2", priority=prio_b, **kw)})


def _start(pair, t_a=0.0, t_b=0.3):
    pair.apply("a", pair.nodes["a"].start(t_a), t_a)
    pair.run_until(t_b)
    pair.apply("b", pair.nodes["b"].start(t_b), t_b)


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("prio_a,prio_b,winner", [(200, 100, "a"), (100, 200, "b"), (100, 100, "b")])
def test_pair_partition_then_heal_leaves_exactly_one_master(protocol, prio_a, prio_b, winner):
    pair = _pair(protocol, prio_a, prio_b)
    _start(pair)
    pair.run_until(20.0)
    assert len(pair.holders()) == 1
    pair.link_up = False
    pair.run_until(40.0)
    assert pair.holders() == ["a", "b"]                         # split brain while partitioned
    pair.link_up = True
    pair.run_until(50.0)
    assert pair.holders() == [winner]                           # higher priority, then address
    assert {name for t, name in pair.garps if t > 40.0} == {winner}


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("failback,final", [(True, "a"), (False, "b")])
def test_pair_primary_restart_failback_setting(protocol, failback, final):
    pair = _pair(protocol, failback=failback)
    _start(pair)
    pair.run_until(20.0)
    assert pair.holders() == ["a"]
    pair.apply("a", pair.nodes["a"].shutdown(20.0), 20.0)       # priority 0: b takes over fast
    pair.run_until(21.5)
    assert pair.holders() == ["b"] and pair.nodes["a"].state is I
    pair.restart("a", 30.0)
    pair.run_until(60.0)
    assert pair.holders() == [final]


@pytest.mark.parametrize("protocol", list(Protocol))
def test_pair_crash_takeover_within_down_interval(protocol):
    pair = _pair(protocol)
    _start(pair)
    pair.run_until(20.0)
    pair.nodes["a"] = Node(pair.configs["a"])                   # crashed: silent, no priority 0
    pair.holds["a"] = False
    pair.run_until(20.0 + pair.nodes["b"].down_interval_s() + 1.0)
    assert pair.holders() == ["b"]


def test_state_enum_is_the_wire_role():
    assert State is Role and [s.name for s in State] == ["INIT", "BACKUP", "MASTER", "FAULT"]
    assert {e for (_, e) in TRANSITIONS} == set(Event)
