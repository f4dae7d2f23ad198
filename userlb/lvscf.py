"""Piranha lvs.cf → `Config` with health checks (nanny) and HA settings (pulse).

What it does: `loads(text, path)` / `load(path)` return `(Config, warnings)`
or raise ConfigError listing every `path:line: message`. The grammar is in
lvscfparse.py; this module gives the values their meaning:

- each `virtual` with `active = 1` becomes a VirtualService (VIP from
  `address`, `port` default 80, `protocol` tcp, `scheduler` wlc, `persistent`
  and `pmask`); each `server` with `active = 1` a RealServer (port defaults to
  the virtual's port, weight 1); inactive blocks are left out, as lvsd does;
- nanny's judgement becomes one check per real server with
  health.presets.nanny_knobs(timeout, reentry) (one failure out,
  reentry // timeout passes back in): `send_program` → ExternalCheck,
  `send`/`expect` → SendExpectCheck (`use_regex`; `expect = "*"` = any reply),
  neither → TcpCheck, or nanny's port-80 rule (send `GET / HTTP/1.0`, expect
  `HTTP`); `quiesce_server = 1` → on_failure "quiesce"; `sorry_server`;
- pulse's settings become HaSettings(protocol "heartbeat"): primary/backup,
  heartbeat_port, keepalive, deadtime, nat_router + nat_nmask, the VIPs with
  their alias devices, the sync daemon; the router's client interface is the
  VIP's device and its server interface the nat_router's device.

What it does not do: resolve host names, ramp weights from weight >> 5 as
nanny does, load monitors, fwmark services, fos (`service = fos`,
`failover` blocks), or forwarding other than NAT (errors or warnings say so).
Mirrors lvsd/nanny (spec §1.4–1.7) and pulse (§1.8).
"""

from __future__ import annotations

import re
from functools import partial
from os import PathLike

from .config import MAX_TIMEOUT_S, Config, ConfigIssue, TimeoutConfig
from .conftext import (Issues, alias_device, prefixlen, read_text, router_for,
                       service_key_text)
from .hasettings import (PULSE_GARP, FloatingAddress, HaSettings, HeartbeatSettings,
                         SyncDaemon)
from .health.presets import nanny_knobs
from .health.spec import Check, ExternalCheck, SendExpectCheck, ServiceHealth, TcpCheck
from .lvscfparse import Section, parse
from .services import RealServer, VirtualService

__all__ = ["loads", "load", "unescape"]

NANNY_HTTP_SEND = "GET / HTTP/1.0\r\n\r\n"
"""What nanny sends to a port-80 service that has no send/expect/send_program."""
_ESCAPES = {"n": "\n", "r": "\r", "\\": "\\", "'": "'"}
_POSIX_CLASSES = {"[:digit:]": "0-9", "[:alpha:]": "a-zA-Z", "[:alnum:]": "a-zA-Z0-9",
                  "[:upper:]": "A-Z", "[:lower:]": "a-z", "[:space:]": " \\t\\r\\n\\v\\f",
                  "[:xdigit:]": "0-9A-Fa-f"}
_FOS_ONLY = ("start_cmd", "stop_cmd", "master", "dirs")


def loads(text: str, path: str = "<string>") -> tuple[Config, tuple[ConfigIssue, ...]]:
    """Parse lvs.cf text; (Config, warnings) or ConfigError with every problem."""
    issues = Issues()
    if not text.strip():
        issues.error(path, 1, "Empty configuration")
        issues.fail()
    root = parse(text, path, issues)
    config = _build(root, path, issues)
    issues.fail()
    return config, issues.sorted_warnings()


def load(path: str | PathLike[str]) -> tuple[Config, tuple[ConfigIssue, ...]]:
    """Read and parse an lvs.cf file."""
    return loads(read_text(path), str(path))


def unescape(value: str) -> str:
    """nanny's escapes: \\n, \\r, \\\\ and \\' become the characters; others stay."""
    return re.sub(r"\\([nr\\'])", lambda m: _ESCAPES[m.group(1)], value)


def _posix_regex(pattern: str) -> str:
    for name, chars in _POSIX_CLASSES.items():
        pattern = pattern.replace(name, chars)
    return pattern


def _build(root: Section, path: str, issues: Issues) -> Config:
    _check_global(root, path, issues)
    services, health, floating = [], [], []
    first: dict[tuple, int] = {}
    for section in root.children:
        if section.kind == "failover":
            issues.warn(path, section.line, f"failover '{section.name}': failover services "
                                            "(fos) are not supported by userlb; ignored")
            continue
        built = _virtual(section, path, issues)
        if built is None:
            continue
        service, checks, vip = built
        if service.key in first:
            issues.error(path, section.line, f"duplicate service {service_key_text(service)} "
                                             f"(first defined at line {first[service.key]})")
            continue
        first[service.key] = section.line
        services.append(service)
        health.append(checks)
        floating.append(vip)
    ha = _ha(root, floating, path, issues)
    router = router_for(ha.floating if ha else tuple(floating), {s.vip for s in services})
    return Config(router, _timeouts(root, path, issues), tuple(services), tuple(health), ha)


def _check_global(root: Section, path: str, issues: Issues) -> None:
    if root.get("service", "lvs") == "fos":
        issues.error(path, root.line_of("service"), "service = fos: failover services are "
                                                    "not supported by userlb (LVS only)")
    if root.get("network", "nat") != "nat":
        issues.error(path, root.line_of("network"), f"network = {root.get('network')}: "
                                                    "userlb is NAT only")
    for key in ("active_cmd", "inactive_cmd"):
        if key in root.entries:
            issues.warn(path, root.line_of(key), f"{key}: not supported by userlb; ignored")


def _timeouts(root: Section, path: str, issues: Issues) -> TimeoutConfig:
    default, values = TimeoutConfig(), {}
    for name in ("tcp", "tcpfin", "udp"):
        value = root.get(f"{name}_timeout", getattr(default, name))
        if not 0 <= value <= MAX_TIMEOUT_S:
            issues.error(path, root.line_of(f"{name}_timeout"),
                         f"{name}_timeout: must be in 0..{MAX_TIMEOUT_S}, got {value}")
            value = getattr(default, name)
        values[name] = value
    return TimeoutConfig(**values)


def _is_active(section: Section, what: str, path: str, issues: Issues) -> bool:
    if "active" not in section.entries:
        issues.warn(path, section.line, f"{what} '{section.name}' has no 'active = 1': "
                                        "inactive, as Piranha reads a missing active as 0")
    return bool(section.get("active", False))


def _virtual(section: Section, path: str, issues: Issues
             ) -> tuple[VirtualService, ServiceHealth, FloatingAddress] | None:
    if not _is_active(section, "virtual", path, issues):
        return None
    errors = len(issues.errors)
    name = f"virtual '{section.name}'"
    if not section.given("address"):
        issues.error(path, section.line, f"{name}: missing required key 'address'")
    if section.get("fwmark", 0):
        issues.error(path, section.line_of("fwmark"),
                     "fwmark: firewall-mark services cannot be read from lvs.cf (a TUN "
                     "sees no netfilter marks); write them in TOML with [[service.match]]")
    _warn_ignored(section, path, issues)
    persistent = section.get("persistent", 0)
    if not 0 <= persistent <= MAX_TIMEOUT_S:
        issues.error(path, section.line_of("persistent"),
                     f"persistent: must be in 0..{MAX_TIMEOUT_S}, got {persistent}")
    vport = section.get("port", 80)
    if vport == 0 and persistent == 0:
        issues.error(path, section.line_of("port"),
                     "port: Zero port specified for non-persistent service")
    reals = _servers(section, vport, path, issues)
    if len(issues.errors) > errors or "address" not in section.entries:
        return None
    vip, label = section.get("address")
    service = VirtualService(section.get("protocol", "tcp"), vip, vport,
                             section.get("scheduler", "wlc"), reals, (), persistent,
                             _pmask(section, persistent))
    floating = FloatingAddress(vip, prefixlen(section.get("vip_nmask", "255.255.255.255")),
                               alias_device(label), label)
    return service, _health(section, service, path, issues), floating


def _warn_ignored(section: Section, path: str, issues: Issues) -> None:
    monitor = section.get("load_monitor")
    if monitor not in (None, "none"):
        issues.warn(path, section.line_of("load_monitor"), f"load_monitor = {monitor}: not "
                                                          "supported by userlb; weights stay fixed")
    if section.get("client_monitor", "/usr/sbin/nanny") != "/usr/sbin/nanny":
        issues.warn(path, section.line_of("client_monitor"),
                    "client_monitor: userlb runs its own checks; ignored")
    for key in _FOS_ONLY:
        if key in section.entries:
            issues.warn(path, section.line_of(key), f"{key}: only for failover services; ignored")


def _pmask(section: Section, persistent: int) -> str:
    # lvsconfig.c stores pmask 255.255.255.255 as unset; without persistence it has no effect
    return section.get("pmask", "255.255.255.255") if persistent else "255.255.255.255"


def _servers(section: Section, vport: int, path: str, issues: Issues) -> tuple[RealServer, ...]:
    reals, first = [], {}
    for server in section.children:
        if not _is_active(server, "server", path, issues):
            continue
        if "address" not in server.entries:
            if not server.given("address"):
                issues.error(path, server.line, f"server '{server.name}': missing required "
                                                "key 'address'")
            continue
        weight, rport = server.get("weight", 1), server.get("port", vport)
        if not 0 <= weight <= 65535:
            issues.error(path, server.line_of("weight"), f"weight: must be in 0..65535, "
                                                        f"got {weight}")
        if not 0 <= rport <= 65535:
            issues.error(path, server.line_of("port"), f"port: must be in 0..65535, got {rport}")
        key = (server.get("address"), rport)
        if key in first:
            issues.error(path, server.line, f"duplicate real server {key[0]}:{key[1]} "
                                            f"(first defined at line {first[key]})")
        first.setdefault(key, server.line)
        reals.append(RealServer(key[0], rport, weight))
    return tuple(reals)


def _health(section: Section, service: VirtualService, path: str,
            issues: Issues) -> ServiceHealth:
    check = _nanny_check(section, service, path, issues)
    sorry = section.get("sorry_server")
    return ServiceHealth(
        service=service, checks=tuple((check,) if check else () for _ in service.reals),
        on_failure="quiesce" if section.get("quiesce_server", False) else "remove",
        sorry_server=RealServer(sorry, service.port) if sorry else None)


def _nanny_check(section: Section, service: VirtualService, path: str,
                issues: Issues) -> Check | None:
    """The check nanny would run for each real server of this virtual block (None = none)."""
    timeout, reentry = section.get("timeout", 10), section.get("reentry", 180)
    if timeout < 1 or reentry < 0:
        issues.error(path, section.line_of("timeout" if timeout < 1 else "reentry"),
                     "timeout must be >= 1 and reentry >= 0 (seconds)")
        return None
    knobs = partial(nanny_knobs, timeout_s=timeout, reentry_s=reentry)
    program, send, expect = (section.get(k) for k in ("send_program", "send", "expect"))
    if program:
        if expect is not None:
            issues.warn(path, section.line_of("expect"),
                        "expect with send_program: userlb judges the program by its exit status only")
        argv = [word for word in program.split(" ") if word]   # nanny splits on single spaces
        return ExternalCheck(program=argv[0], args=tuple(argv[1:]), **knobs(ExternalCheck))
    if service.protocol == "udp":
        issues.warn(path, section.line, f"virtual '{section.name}': UDP checks are not "
                                        "supported by userlb; its real servers are not checked")
        return None
    if send is None and expect is None:
        if service.port != 80:
            return TcpCheck(**knobs(TcpCheck))
        send, expect = NANNY_HTTP_SEND, "HTTP"                   # nanny's port-80 rule
    return _send_expect(section, send, expect, knobs(SendExpectCheck), path, issues)


def _send_expect(section: Section, send: str | None, expect: str | None, knobs: dict,
                 path: str, issues: Issues) -> Check | None:
    regex = bool(section.get("use_regex", False))
    expect = unescape(expect or "")
    if expect == "*":                          # nanny: any reply (even EOF) passes
        expect, regex = "", False
    try:
        return SendExpectCheck(send=unescape(send or ""), regex=regex,
                               expect=_posix_regex(expect) if regex else expect, **knobs)
    except re.error as exc:
        issues.error(path, section.line_of("expect"), f"expect: invalid regular expression: {exc}")
        return None


def _ha(root: Section, vips: list[FloatingAddress], path: str,
        issues: Issues) -> HaSettings | None:
    if "primary" not in root.entries:
        if not root.given("primary"):
            issues.error(path, 1, "missing required key 'primary' (the primary router's address)")
        return None
    beat = _heartbeat(root, path, issues)
    nat = root.get("nat_router")
    nat_router = None
    if nat:
        nat_router = FloatingAddress(nat[0], prefixlen(root.get("nat_nmask", "255.255.255.255")),
                                     alias_device(nat[1]), nat[1])
    elif "nat_nmask" in root.entries:
        issues.warn(path, root.line_of("nat_nmask"), "nat_nmask without nat_router; ignored")
    unique: dict[str, FloatingAddress] = {}
    for vip in vips:                     # one alias per distinct VIP, as pulse brings them up
        unique.setdefault(vip.address, vip)
    floating = tuple(unique.values()) + ((nat_router,) if nat_router else ())
    return HaSettings("heartbeat", floating, nat_router, beat,
                      sync_daemon=_sync_daemon(root, path, issues), garp=PULSE_GARP)


def _heartbeat(root: Section, path: str, issues: Issues) -> HeartbeatSettings:
    keepalive, deadtime = root.get("keepalive", 2), root.get("deadtime", 5)
    if keepalive < 1:
        issues.error(path, root.line_of("keepalive"), f"keepalive: must be >= 1, got {keepalive}")
    elif deadtime <= keepalive:
        issues.error(path, root.line_of("deadtime"),
                     f"deadtime: must exceed keepalive ({keepalive}), got {deadtime}")
    if root.get("heartbeat_port", 539) == 0:
        issues.error(path, root.line_of("heartbeat_port"), "heartbeat_port: must be in 1..65535")
    backup, active = root.get("backup"), bool(root.get("backup_active", False))
    if active and backup is None:
        issues.warn(path, root.line_of("backup_active"), "backup_active = 1 without backup: "
                                                         "no failover (pulse clears it)")
        active = False
    if backup is not None and backup == root.get("primary"):
        issues.error(path, root.line_of("backup"), f"backup: same address as primary ({backup})")
    return HeartbeatSettings(
        root.get("primary"), backup, root.get("primary_private"), root.get("backup_private"),
        active, root.get("heartbeat_port", 539), float(keepalive), float(deadtime),
        bool(root.get("monitor_links", 0)))


def _sync_daemon(root: Section, path: str, issues: Issues) -> SyncDaemon | None:
    if not root.get("syncdaemon", False):
        return None
    syncid = root.get("syncd_id", 0)
    if not 0 <= syncid <= 255:
        issues.error(path, root.line_of("syncd_id"), f"syncd_id: must be in 0..255, got {syncid}")
    try:
        interface = alias_device(root.get("syncd_iface", "eth0"))
    except ValueError as exc:
        issues.error(path, root.line_of("syncd_iface"), f"syncd_iface: {exc}")
        return None
    return SyncDaemon(interface, syncid)
