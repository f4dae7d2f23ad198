"""keepalived `virtual_server` and `real_server` blocks → VirtualService + ServiceHealth.

What it does: `read_virtual_server(node, issues)` reads one
`virtual_server IP [PORT] { … }` block: lb_algo/lvs_sched (any IPVS name
userlb has), lb_kind/lvs_method (NAT only), protocol TCP|UDP,
persistence_timeout (bare = 360 s) and persistence_granularity, the scheduler
flags (sh-port, sh-fallback, mh-port, mh-fallback, flag-1/flag-2),
quorum/hysteresis/sorry_server, inhibit_on_failure (→ on_failure "quiesce"),
and each `real_server IP [PORT] { … }` (weight, uthreshold, lthreshold, the
checkers via keepalivedcheck). A real server without a port takes the virtual
server's, as ipvsadm -r host does.

What it does not do: `virtual_server fwmark N` and `virtual_server group NAME`
(errors: userlb cannot see netfilter marks, and groups must be spelled out),
SCTP, IPv6, quorum_up/down and notify scripts (warned). inhibit_on_failure is
per service in userlb: real servers that disagree with the virtual_server get
a warning. Mirrors keepalived 2.2.7 check_parser.c (spec §2.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .config import MAX_TIMEOUT_S, SCHED_FLAGS, SCHEDULERS
from .configcheck import INT_MAX
from .conftext import Issues, netmask, unicast
from .health.spec import Check, ServiceHealth
from .keepalivedcheck import CHECKERS, OTHER_CHECKERS, Timing, read_checker, timing_handlers
from .keepalivedlex import Bad, Handler, Node, dispatch, store
from .services import RealServer, VirtualService

DEFAULT_PERSISTENCE_S = 360
"""persistence_timeout given without a value (keepalived, as ipvsadm -p)."""
_VS_UNSUPPORTED = ("omega", "quorum_up", "quorum_down", "ha_suspend", "sorry_server_inhibit",
                   "sorry_server_lvs_method", "persistence_engine", "ops", "flag-3",
                   "lvs_sched_flags", "retry_interval")
_RS_UNSUPPORTED = ("notify_up", "notify_down")
_QUIET = ("smtp_alert", "snmp_name", "log_all_failures")


def _address(text: str) -> str:
    if ":" in text:
        raise Bad(f"'{text}': IPv6 is not supported by userlb")
    try:
        return unicast(text)
    except ValueError as exc:
        raise Bad(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise Bad(f"port must be 0..65535, got '{text}'")
    return int(text)


def _nat_only(node: Node) -> None:
    if node.arg().upper() != "NAT":
        raise Bad(f"{node.arg()}: userlb is NAT only")


@dataclass
class _VirtualServer:
    """What one virtual_server block said, before it is built."""

    vip: str
    port: int | None
    values: dict[str, Any] = field(default_factory=lambda: {"protocol": "tcp", "scheduler": "wlc"})
    flags: list[tuple[Node, str]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    reals: list[Node] = field(default_factory=list)

    def handlers(self) -> dict[str, Handler]:
        put = partial(store, self.values)
        flags = ("sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2")
        return {
            **timing_handlers(self.timing),
            "lb_algo": put("scheduler", _scheduler), "lvs_sched": put("scheduler", _scheduler),
            "lb_kind": _nat_only, "lvs_method": _nat_only,
            "protocol": put("protocol", _protocol),
            "persistence_timeout": put("persistent", _persistence),
            "persistence_granularity": put("netmask", _netmask),
            "quorum": put("quorum", lambda n: n.integer(1, INT_MAX)),
            "hysteresis": put("hysteresis", lambda n: n.integer(0, INT_MAX)),
            "sorry_server": put("sorry", self._sorry),
            "inhibit_on_failure": put("inhibit", Node.flag),
            "ip_family": _inet_only,
            **{name: lambda n: self.flags.append((n, n.keyword)) for name in flags},
            "real_server": self.reals.append,
        }

    def _sorry(self, node: Node) -> RealServer:
        port = _port(node.arg(1)) if len(node.args) > 1 else (self.port or 0)
        return RealServer(_address(node.arg()), port)


def _scheduler(node: Node) -> str:
    if node.arg() not in SCHEDULERS:
        raise Bad(f"unknown scheduler '{node.arg()}' (one of {', '.join(SCHEDULERS)})")
    return node.arg()


def _protocol(node: Node) -> str:
    if node.arg().upper() not in ("TCP", "UDP"):
        raise Bad(f"{node.arg()}: userlb balances TCP and UDP only")
    return node.arg().lower()


def _persistence(node: Node) -> int:
    return node.integer(1, MAX_TIMEOUT_S) if node.args else DEFAULT_PERSISTENCE_S


def _netmask(node: Node) -> str:
    try:
        return netmask(node.arg())
    except ValueError as exc:
        raise Bad(str(exc)) from None


def _inet_only(node: Node) -> None:
    if node.arg() != "inet":
        raise Bad(f"{node.arg()}: userlb is IPv4 only")


def _header(node: Node) -> _VirtualServer:
    args = node.args
    if not args:
        raise Bad("missing address")
    if args[0] == "fwmark":
        raise Bad("fwmark services cannot be read from keepalived.conf (a TUN sees no "
                  "netfilter marks); write them in TOML with [[service.match]]")
    if args[0] == "group":
        raise Bad(f"group {' '.join(args[1:])}: virtual_server_group is not supported by "
                  "userlb; write one virtual_server per address and port")
    if len(args) > 2:
        raise Bad(f"unexpected arguments after the port: '{' '.join(args[2:])}'")
    return _VirtualServer(_address(args[0]), _port(args[1]) if len(args) > 1 else None)


def read_virtual_server(node: Node, issues: Issues) -> tuple[VirtualService, ServiceHealth] | None:
    """The service and its health settings, or None after reporting why not."""
    errors = len(issues.errors)
    vs = _header(node)
    dispatch(node.children(), vs.handlers(), "virtual_server", issues,
             unsupported=_VS_UNSUPPORTED, quiet=_QUIET)
    v = vs.values
    persistent = v.get("persistent", 0)
    if vs.port is None and not persistent:
        issues.error(node.path, node.line, "virtual_server: a port may be left out only "
                                           "with persistence_timeout")
    flags = _flags(vs, v["scheduler"], issues)
    timing = Timing(**vs.timing)
    reals = [_real(r, vs.port or 0, timing, issues) for r in vs.reals]
    _duplicate_reals(vs.reals, [r for r, _, _ in reals], issues)
    if len(issues.errors) > errors:
        return None
    mask = v.get("netmask", "255.255.255.255") if persistent else "255.255.255.255"
    service = VirtualService(v["protocol"], vs.vip, vs.port or 0, v["scheduler"],
                             tuple(r for r, _, _ in reals), flags, persistent, mask)
    on_failure = _on_failure(node, v.get("inhibit"), reals, issues)
    return service, ServiceHealth(service=service, checks=tuple(c for _, c, _ in reals),
                                  on_failure=on_failure, quorum=v.get("quorum", 1),
                                  hysteresis=v.get("hysteresis", 0), sorry_server=v.get("sorry"))


def _flags(vs: _VirtualServer, scheduler: str, issues: Issues) -> tuple[str, ...]:
    flags: list[str] = []
    for node, name in vs.flags:
        if name.startswith("flag-"):       # IP_VS_SVC_F_SCHED1/2: fallback / port of sh and mh
            name = f"{scheduler}-{'fallback' if name == 'flag-1' else 'port'}"
        if SCHED_FLAGS.get(name) != scheduler:
            issues.error(node.path, node.line, f"{node.keyword}: incompatible scheduler flag "
                                               f"(scheduler is '{scheduler}')")
        elif name not in flags:
            flags.append(name)
    return tuple(flags)


def _real(node: Node, vport: int, inherited: Timing, issues: Issues
          ) -> tuple[RealServer, tuple[Check, ...], bool | None]:
    """(real server, its checks, its own inhibit_on_failure or None)."""
    try:
        if not 1 <= len(node.args) <= 2:
            raise Bad("expected IP [PORT]")
        address, port = _address(node.arg()), _port(node.arg(1)) if len(node.args) > 1 else vport
    except Bad as exc:
        issues.error(node.path, node.line, f"real_server: {exc}")
        address, port = "0.0.0.0", vport
    values: dict[str, Any] = {"weight": 1, "u_threshold": 0, "l_threshold": 0}
    timing: dict[str, Any] = {}
    checkers: list[Node] = []
    put = partial(store, values)
    handlers = {**timing_handlers(timing),
                "weight": put("weight", lambda n: n.integer(0, 65535)),
                "uthreshold": put("u_threshold", lambda n: n.integer(0, INT_MAX)),
                "lthreshold": put("l_threshold", lambda n: n.integer(0, INT_MAX)),
                "inhibit_on_failure": put("inhibit", Node.flag),
                "lb_kind": _nat_only, "lvs_method": _nat_only,
                **{name: checkers.append for name in CHECKERS},
                **{name: lambda n: issues.warn(n.path, n.line, f"{n.keyword}: not supported by "
                                               "userlb; ignored (a real server without checks "
                                               "is always up)") for name in OTHER_CHECKERS}}
    dispatch(node.children(), handlers, "real_server", issues,
             unsupported=_RS_UNSUPPORTED, quiet=_QUIET)
    if values["l_threshold"] > values["u_threshold"]:
        lower, upper = values["l_threshold"], values["u_threshold"]
        issues.error(node.path, node.line, f"real_server: lower threshold {lower} is higher "
                                           f"than upper threshold {upper}")
    own = Timing(**timing).under(inherited)
    checks = tuple(c for checker in checkers for c in read_checker(checker, own, issues))
    inhibit = values.pop("inhibit", None)
    return RealServer(address, port, **values), checks, inhibit


def _duplicate_reals(nodes: list[Node], reals: list[RealServer], issues: Issues) -> None:
    first: dict[tuple[str, int], int] = {}
    for node, real in zip(nodes, reals):
        key = (real.address, real.port)
        if key in first:
            issues.error(node.path, node.line, f"real_server: duplicate real server {key[0]}:"
                                               f"{key[1]} (first defined at line {first[key]})")
        first.setdefault(key, node.line)


def _on_failure(node: Node, service_inhibit: bool | None, reals: list, issues: Issues) -> str:
    effective = {own if own is not None else bool(service_inhibit) for _, _, own in reals}
    if len(effective) > 1:
        issues.warn(node.path, node.line, "inhibit_on_failure differs between real servers; "
                                          "userlb applies the virtual_server's setting to all")
        effective = {bool(service_inhibit)}
    inhibit = effective.pop() if effective else bool(service_inhibit)
    return "quiesce" if inhibit else "remove"
