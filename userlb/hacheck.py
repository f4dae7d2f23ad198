"""Validation of the native config's optional `[ha]` table into one router's `HaConfig`.

What it does: checks every key of `[ha]` with configcheck's helpers (so errors
read `path:line: ha.key: message` like the rest of the file), fills the
interfaces in from `[router]`, derives the addresses that move on takeover (the
services' VIPs, then the `nat_router` gateway) and builds `userlb.ha.config.HaConfig`.
Durations are seconds (decimals allowed, as keepalived's advert_int);
`advert_int` becomes HaConfig.advert_int_cs.

What it does not do: open sockets or decide anything. It reads one file: the
heartbeat key named by `key_file` (hex, like `key`), relative to the config file.
Docs: docs/config.md, "High availability: [ha]".
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from userlb.ha.config import HaConfig, Protocol
from userlb.ha.heartbeat import MIN_KEY_BYTES
from userlb.ha.vrrp import MAX_ADVERT_INT_CS

HA_KEYS = ("protocol", "primary", "interface", "private_address", "private_interface", "peer",
           "peer_private", "priority", "vrid", "advert_int", "down_timer_adverts", "keepalive",
           "deadtime", "heartbeat_port", "key", "key_file", "failback", "garp_repeat",
           "garp_delay", "garp_interval", "garp_refresh", "garp_refresh_repeat",
           "garp_lower_prio", "nat_router", "sync", "sync_interface", "sync_group", "sync_port",
           "syncid", "sync_interval")
"""Every key `[ha]` accepts (docs/config.md documents each)."""

_HEX = re.compile(r"[0-9a-fA-F]+")
_PATH = ("ha",)


def service_vips(services) -> list[str]:
    """The virtual addresses of `services` (fwmark services: their match addresses), in order."""
    seen: dict[str, None] = {}
    for s in services:
        if getattr(s, "fwmark", 0):
            seen.update((m[1], None) for m in getattr(s, "match", ()))
        elif s.vip:
            seen[s.vip] = None
    return list(seen)


def check_ha(c, document: dict, router: Any, services: tuple, bad: Any) -> Any:
    """The HaConfig of `document["ha"]`, None without one, or `bad` after reporting errors."""
    if "ha" not in document:
        return None
    table = c.table(document, "ha")
    if table is bad:
        return bad
    c.keys(table, _PATH, HA_KEYS)
    v = _values(c, table, router, bad)
    v["key"] = _key(c, table, v["protocol"], bad)
    v["vips"] = _vips(c, services, v["nat_router"], bad)
    _cross_checks(c, table, v, bad)
    if any(value is bad for value in v.values()) or router is bad:
        return bad
    try:
        return HaConfig(**v)
    except ValueError as exc:           # a rule HaConfig knows and the checks above missed
        c.error(_PATH, str(exc))
        return bad


def _values(c, table: dict, router: Any, bad: Any) -> dict:
    d = HaConfig("0.0.0.1", ("0.0.0.1",))
    get_if = getattr(router, "client_interface", "c-rtr"), getattr(router, "server_interface",
                                                                     "br-rs")
    v: dict[str, Any] = {"protocol": _choice(c, table, "protocol", ("vrrp", "heartbeat"), bad)}
    v["primary"] = c.address(table, _PATH, "primary")
    v["interface"] = c.interface(table, _PATH, "interface", get_if[0])
    v["private_interface"] = c.interface(table, _PATH, "private_interface", get_if[1])
    for name in ("private_address", "peer", "peer_private"):
        v[name] = c.address(table, _PATH, name) if name in table else None
    v["priority"] = c.integer(table, _PATH, "priority", d.priority, 1, 255)
    v["vrid"] = c.integer(table, _PATH, "vrid", d.vrid, 1, 255)
    advert_s = _seconds(c, table, "advert_int", d.advert_int_cs / 100, 0.01,
                        MAX_ADVERT_INT_CS / 100, bad)
    v["advert_int_cs"] = bad if advert_s is bad else round(advert_s * 100)
    v["down_timer_adverts"] = c.integer(table, _PATH, "down_timer_adverts",
                                        d.down_timer_adverts, 1, 100)
    v["keepalive_s"] = _seconds(c, table, "keepalive", d.keepalive_s, 0.001, None, bad)
    v["deadtime_s"] = _seconds(c, table, "deadtime", d.deadtime_s, 0.001, None, bad)
    v["heartbeat_port"] = c.integer(table, _PATH, "heartbeat_port", d.heartbeat_port, 1, 65535)
    v["failback"] = _boolean(c, table, "failback", d.failback, bad)
    v["garp_repeat"] = c.integer(table, _PATH, "garp_repeat", d.garp_repeat, 0, 100)
    v["garp_delay_s"] = _seconds(c, table, "garp_delay", d.garp_delay_s, 0, None, bad)
    v["garp_interval_s"] = _seconds(c, table, "garp_interval", d.garp_interval_s, 0, None, bad)
    v["garp_refresh_s"] = _seconds(c, table, "garp_refresh", d.garp_refresh_s, 0, None, bad)
    v["garp_refresh_repeat"] = c.integer(table, _PATH, "garp_refresh_repeat",
                                         d.garp_refresh_repeat, 0, 100)
    v["garp_lower_prio"] = _boolean(c, table, "garp_lower_prio", d.garp_lower_prio, bad)
    v["nat_router"] = _nat_router(c, table, bad)
    v["sync"] = _boolean(c, table, "sync", d.sync, bad)
    v["sync_interface"] = c.interface(table, _PATH, "sync_interface", v["private_interface"])
    v["sync_group"] = _group(c, table, d.sync_group, bad)
    v["sync_port"] = c.integer(table, _PATH, "sync_port", d.sync_port, 1, 65535)
    v["syncid"] = c.integer(table, _PATH, "syncid", d.syncid, 0, 255)
    v["sync_interval_s"] = _seconds(c, table, "sync_interval", d.sync_interval_s, 0.01, 60, bad)
    return v


def _choice(c, table: dict, key: str, allowed: tuple, bad: Any) -> Any:
    value = c.get(table, _PATH, key, "string", allowed[0])
    if value is not bad and value not in allowed:
        c.error(_PATH + (key,), f"must be one of {', '.join(map(repr, allowed))}, got '{value}'")
        return bad
    return value


def _seconds(c, table: dict, key: str, default: float, low: float, high: float | None,
             bad: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        c.error(_PATH + (key,), f"must be a number of seconds, got {type(value).__name__}")
        return bad
    if value < low or (high is not None and value > high):
        c.error(_PATH + (key,), f"must be in {low}..{high} s, got {value}" if high is not None
                else f"must be at least {low} s, got {value}")
        return bad
    return float(value)


def _boolean(c, table: dict, key: str, default: bool, bad: Any) -> Any:
    value = table.get(key, default)
    if not isinstance(value, bool):
        c.error(_PATH + (key,), f"must be true or false, got {value!r}")
        return bad
    return value


def _nat_router(c, table: dict, bad: Any) -> Any:
    value = c.get(table, _PATH, "nat_router", "string", None)
    if value is None or value is bad:
        return value
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        c.error(_PATH + ("nat_router",), f"'{value}' is not an IPv4 address with a prefix, "
                                         "e.g. \"198.18.2.1/24\"")
        return bad
    if "/" not in value or iface.ip.is_multicast or iface.ip.is_loopback or iface.ip.is_unspecified:
        c.error(_PATH + ("nat_router",), f"'{value}' must be a unicast address with its "
                                         "prefix length, e.g. \"198.18.2.1/24\"")
        return bad
    return iface


def _group(c, table: dict, default, bad: Any) -> Any:
    value = c.get(table, _PATH, "sync_group", "string", str(default))
    if value is bad:
        return bad
    try:
        group = ipaddress.IPv4Address(value)
    except ValueError:
        group = None
    if group is None or not group.is_multicast:
        c.error(_PATH + ("sync_group",), f"'{value}' is not an IPv4 multicast address")
        return bad
    return group


def _key(c, table: dict, protocol: Any, bad: Any) -> Any:
    if "key" in table and "key_file" in table:
        c.error(_PATH + ("key_file",), "give either key or key_file, not both")
        return bad
    if "key_file" in table:
        name = c.get(table, _PATH, "key_file", "string")
        if name is bad:
            return bad
        where = Path(c.path).parent / name if c.path != "<string>" else Path(name)
        try:
            text = where.read_text().strip()
        except OSError as exc:
            c.error(_PATH + ("key_file",), f"cannot read {name}: {exc.strerror}")
            return bad
        return _hex_key(c, "key_file", text, bad)
    text = c.get(table, _PATH, "key", "string", None)
    if text is None:
        if protocol == "heartbeat":
            c.error(_PATH, "protocol 'heartbeat' needs a shared key (key or key_file)")
            return bad
        return b""
    return bad if text is bad else _hex_key(c, "key", text, bad)


def _hex_key(c, key: str, text: str, bad: Any) -> Any:
    if not _HEX.fullmatch(text) or len(text) % 2 or len(text) < 2 * MIN_KEY_BYTES:
        c.error(_PATH + (key,), f"must be at least {MIN_KEY_BYTES} bytes as hex digits "
                                f"({2 * MIN_KEY_BYTES} or more), e.g. from `openssl rand -hex 32`")
        return bad
    return bytes.fromhex(text)


def _vips(c, services: tuple, nat_router: Any, bad: Any) -> Any:
    vips = service_vips(services)
    if nat_router is not None and nat_router is not bad:
        vips.append(str(nat_router.ip))
    if not vips and nat_router is not bad:
        c.error(_PATH, "no address to fail over: define a [[service]] or nat_router")
        return bad
    return tuple(vips)


def _cross_checks(c, table: dict, v: dict, bad: Any) -> None:
    if v["protocol"] == "heartbeat" and "peer" not in table:
        c.error(_PATH, "protocol 'heartbeat' needs the partner's address 'peer'")
        v["peer"] = bad
    if "peer_private" in table and "private_address" not in table:
        c.error(_PATH + ("peer_private",), "needs this router's own 'private_address'")
        v["peer_private"] = bad
    k, d = v["keepalive_s"], v["deadtime_s"]
    if k is not bad and d is not bad and d <= k:
        c.error(_PATH + ("deadtime",), f"must exceed keepalive ({k:g} s), got {d:g}")
        v["deadtime_s"] = bad
    for name in ("peer", "peer_private", "private_address"):
        if v[name] is not None and v[name] is not bad and v[name] == v["primary"]:
            c.error(_PATH + (name,), "must differ from primary")
            v[name] = bad
    if v["protocol"] is not bad:
        v["protocol"] = Protocol(v["protocol"])
