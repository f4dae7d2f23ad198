"""Validation of a parsed config document (tomllib's dict) into a `config.Config`.

Every check records a `ConfigIssue` and carries on, so one pass reports every
problem in the file; a value that failed becomes `_BAD` and the object holding it
is not built (no cascade of follow-up errors). Messages start with the key path
(`service[0].real[1].weight: ...`); the line comes from the caller's `locate`.
Limits and wording mirror ipvsadm and the kernel where they have any (see config).
Does not read files or apply anything.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
from dataclasses import fields
from typing import Any, Callable

from .config import (IO_MODES, MAX_QUEUES, MAX_TIMEOUT_S, SCHED_FLAGS, SCHEDULERS, Config,
                     ConfigIssue, RouterConfig, TimeoutConfig, is_netmask, normal_ipv4)
from .services import PROTOCOLS, RealServer, VirtualService

KeyPath = tuple[str | int, ...]

_BAD: Any = type("_Bad", (), {"__repr__": lambda self: "<bad>"})()
_MISSING: Any = object()

INT_MAX = 2**31 - 1  # ipvsadm -x/-y accept 0..INT_MAX
UNIX_PATH_MAX = 107  # sizeof(sun_path) - 1 for the trailing NUL
IFNAMSIZ = 16  # dev_valid_name: strlen(name) < IFNAMSIZ

TOP_KEYS = ("router", "timeouts", "service", "ha")
ROUTER_KEYS = tuple(f.name for f in fields(RouterConfig))
TIMEOUT_KEYS = tuple(f.name for f in fields(TimeoutConfig))
SERVICE_KEYS = ("protocol", "vip", "port", "scheduler", "flags", "persistent", "persistence_mask",
                "real", "fwmark", "match", "health")
FWMARK_SERVICE_KEYS = tuple(k for k in SERVICE_KEYS if k not in ("protocol", "vip", "port"))
MATCH_KEYS = ("protocol", "vip", "port")
UINT_MAX = 2**32 - 1  # ipvsadm parse_fwmark: 1..UINT_MAX
REAL_KEYS = ("address", "port", "weight", "u_threshold", "l_threshold", "check")

_ARTICLE = {"integer": "an integer", "string": "a string", "array": "an array", "table": "a table",
            "boolean": "a boolean"}


def check(document: dict, path: str, locate: Callable[[KeyPath], int]
          ) -> tuple[Config | None, list[ConfigIssue]]:
    """Validate `document`; returns (Config, []) or (None, every issue found)."""
    checker = _Checker(path, locate)
    checker.keys(document, (), TOP_KEYS)
    router = checker.router(checker.table(document, "router"))
    timeouts = checker.timeouts(checker.table(document, "timeouts"))
    services = checker.services(document)
    from .hacheck import check_ha  # hacheck uses this module's checker helpers
    ha = check_ha(checker, document, router, services, _BAD)
    if checker.issues:
        return None, checker.issues
    return Config(router, timeouts, services, health=tuple(checker.health), ha=ha), []


def toml_type(value: object) -> str:
    """TOML's name for the type of a value tomllib produced."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
                       (list, "array"), (dict, "table"), (datetime.datetime, "datetime"),
                       (datetime.date, "date"), (datetime.time, "time")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def key_name(path: KeyPath) -> str:
    """("service", 0, "real", 1, "port") → "service[0].real[1].port"."""
    text = ""
    for segment in path:
        text += f"[{segment}]" if isinstance(segment, int) else ("." if text else "") + segment
    return text


def _build(cls: type, values: dict[str, Any]) -> Any:
    return _BAD if any(value is _BAD for value in values.values()) else cls(**values)


class _Checker:
    def __init__(self, path: str, locate: Callable[[KeyPath], int]) -> None:
        self.path = path
        self.locate = locate
        self.issues: list[ConfigIssue] = []
        self.health: list = []          # ServiceHealth of the services that have checks

    def error(self, path: KeyPath, message: str) -> None:
        message = f"{key_name(path)}: {message}"
        self.issues.append(ConfigIssue(self.path, self.locate(path), message))

    # -- generic ---------------------------------------------------------------

    def keys(self, table: dict, path: KeyPath, allowed) -> None:
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, list(allowed), n=1)
                self.error(path + (key,),
                           "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))

    def get(self, table: dict, path: KeyPath, key: str, kind: str, default: Any = _MISSING) -> Any:
        if key not in table:
            if default is _MISSING:
                self.error(path, f"missing required key '{key}'")
                return _BAD
            return default
        value = table[key]
        if toml_type(value) != kind:
            self.error(path + (key,), f"must be {_ARTICLE[kind]}, got {toml_type(value)}")
            return _BAD
        return value

    def integer(self, table: dict, path: KeyPath, key: str, default: Any, low: int,
                high: int | None = None) -> Any:
        value = self.get(table, path, key, "integer", default)
        if value is _BAD or key not in table:
            return value
        if value < low or (high is not None and value > high):
            expected = f"in {low}..{high}" if high is not None else f"at least {low}"
            self.error(path + (key,), f"must be {expected}, got {value}")
            return _BAD
        return value

    def table(self, document: dict, key: str) -> Any:
        value = document.get(key, {})
        if not isinstance(value, dict):
            self.error((key,), f"must be a table, got {toml_type(value)}")
            return _BAD
        return value

    def tables(self, parent: dict, path: KeyPath, key: str, header: str) -> list:
        """The array of tables parent[key] as (path, table) pairs; [] if absent or wrong."""
        entries = parent.get(key, [])
        if not isinstance(entries, list):
            self.error(path + (key,), f"must be an array of tables ({header}), "
                                      f"got {toml_type(entries)}")
            return []
        pairs = []
        for index, entry in enumerate(entries):
            if isinstance(entry, dict):
                pairs.append((path + (key, index), entry))
            else:
                self.error(path + (key, index), f"must be a table, got {toml_type(entry)}")
        return pairs

    def address(self, table: dict, path: KeyPath, key: str) -> Any:
        value = self.get(table, path, key, "string")
        if value is _BAD:
            return value
        address = normal_ipv4(value)
        if address is None:
            self.error(path + (key,), f"'{value}' is not a valid IPv4 address")
            return _BAD
        ip = ipaddress.IPv4Address(address)
        kind = ("unspecified" if ip.is_unspecified else "loopback" if ip.is_loopback
                else "multicast" if ip.is_multicast
                else "broadcast" if address == "255.255.255.255" else None)
        if kind:
            self.error(path + (key,), f"{address} is not a usable unicast address ({kind})")
            return _BAD
        return address

    # -- [router] and [timeouts] ----------------------------------------------

    def router(self, table: Any) -> Any:
        if table is _BAD:
            return _BAD
        path, default = ("router",), RouterConfig()
        self.keys(table, path, ROUTER_KEYS)
        values = {name: self.interface(table, path, name, getattr(default, name))
                  for name in ("tun", "client_interface", "server_interface")}
        values["table_size"] = self.integer(table, path, "table_size", default.table_size, 1)
        values["ctl_socket"] = self.socket_path(table, path, "ctl_socket", default.ctl_socket)
        values["trace_connections"] = self.integer(table, path, "trace_connections",
                                                   default.trace_connections, 0)
        values["batch_size"] = self.integer(table, path, "batch_size", default.batch_size, 1)
        values["offload"] = self.get(table, path, "offload", "boolean", default.offload)
        values["io"] = self.get(table, path, "io", "string", default.io)
        if values["io"] not in (_BAD, *IO_MODES):
            self.error(path + ("io",), f"must be one of {', '.join(IO_MODES)}, got "
                                       f"'{values['io']}'")
            values["io"] = _BAD
        values["queues"] = self.integer(table, path, "queues", default.queues, 1, MAX_QUEUES)
        values["metrics"] = self.endpoint(table, path, "metrics", default.metrics)
        values["web"] = self.endpoint(table, path, "web", default.web)
        values["web_token"] = self.get(table, path, "web_token", "string", default.web_token)
        if values["web_token"] not in (_BAD, "") and (len(values["web_token"]) < 16 or any(
                not 0x21 <= ord(ch) <= 0x7E for ch in values["web_token"])):
            self.error(path + ("web_token",), "must be empty or at least 16 printable "
                                              "characters without spaces")
            values["web_token"] = _BAD
        values["log_format"] = self.get(table, path, "log_format", "string", default.log_format)
        if values["log_format"] not in (_BAD, "plain", "json"):
            self.error(path + ("log_format",), f"must be 'plain' or 'json', got "
                                               f"'{values['log_format']}'")
            values["log_format"] = _BAD
        return _build(RouterConfig, values)

    def endpoint(self, table: dict, path: KeyPath, key: str, default: str) -> Any:
        """"" or "a.b.c.d:port" (a listening address)."""
        value = self.get(table, path, key, "string", default)
        if value in (_BAD, ""):
            return value
        host, _, port = value.rpartition(":")
        if normal_ipv4(host) is None or not port.isdigit() or not 0 < int(port) < 65536:
            self.error(path + (key,), f"'{value}' is not an IPv4 address:port")
            return _BAD
        return value

    def interface(self, table: dict, path: KeyPath, key: str, default: str) -> Any:
        value = self.get(table, path, key, "string", default)
        if value is _BAD or key not in table:
            return value
        # as the kernel's dev_valid_name()
        if (not 0 < len(value) < IFNAMSIZ or value in (".", "..")
                or any(ch in "/:" or ch.isspace() for ch in value)):
            self.error(path + (key,), f"'{value}' is not a valid interface name "
                                      "(1..15 characters, no '/', ':' or whitespace)")
            return _BAD
        return value

    def socket_path(self, table: dict, path: KeyPath, key: str, default: str) -> Any:
        value = self.get(table, path, key, "string", default)
        if value is _BAD or key not in table:
            return value
        size = len(value.encode())
        if not 0 < size <= UNIX_PATH_MAX:
            self.error(path + (key,), f"must be 1..{UNIX_PATH_MAX} bytes long "
                                      f"(a unix socket path), got {size}")
            return _BAD
        return value

    def timeouts(self, table: Any) -> Any:
        if table is _BAD:
            return _BAD
        path, default = ("timeouts",), TimeoutConfig()
        self.keys(table, path, TIMEOUT_KEYS)
        values = {key: self.integer(table, path, key, getattr(default, key), 0, MAX_TIMEOUT_S)
                  for key in TIMEOUT_KEYS}
        return _build(TimeoutConfig, values)

    # -- [[service]] and [[service.real]] ----------------------------------------

    def services(self, document: dict) -> tuple[VirtualService, ...]:
        built, first = [], {}
        for path, table in self.tables(document, (), "service", "[[service]]"):
            key, service = self.service(table, path)
            if key in first:
                what = (f"FWM {key[1]}" if key[0] == "fwmark"
                        else f"{key[0].upper()} {key[1]}:{key[2]}")
                self.error(path, f"duplicate service {what} "
                                 f"(first defined at line {self.locate(first[key])})")
            elif key is not None:
                first[key] = path
            if service is not _BAD:
                built.append(service)
                self.service_health(table, path, service)
        return tuple(built)

    def service_health(self, table: dict, path: KeyPath, service: VirtualService) -> None:
        """[service.health] and [[service.real.check]] → a ServiceHealth (docs/health.md)."""
        from .health.presets import check_from_table, service_health_from_tables
        settings = self.get(table, path, "health", "table", {})
        reals = table.get("real", [])          # its errors are reported by reals()
        reals = [real for real in reals if isinstance(real, dict)] if isinstance(reals, list) else []
        checks = []
        for index, real in enumerate(reals):
            tables = self.tables(real, path + ("real", index), "check", "[[service.real.check]]")
            for check_path, check in tables:
                try:
                    check_from_table(check)
                except (ValueError, TypeError) as exc:
                    self.error(check_path, str(exc))
            checks.append([check for _, check in tables])
        if settings is _BAD or (not settings and not any(checks)):
            return
        try:
            self.health.append(service_health_from_tables(service, settings, checks))
        except (ValueError, TypeError) as exc:
            if not self.issues:
                self.error(path + ("health",), str(exc))

    def service(self, table: dict, path: KeyPath) -> tuple[tuple | None, Any]:
        """(protocol, vip, port) if those three are valid, and the service if all is."""
        if "fwmark" in table:
            return self.fwmark_service(table, path)
        self.keys(table, path, SERVICE_KEYS)
        if "match" in table:
            self.error(path + ("match",), "only a fwmark service has match rules")
        protocol = self.protocol(table, path)
        vip = self.address(table, path, "vip")
        port = self.integer(table, path, "port", _MISSING, 0, 65535)
        scheduler = self.scheduler(table, path)
        flags = self.flags(table, path, scheduler)
        persistent = self.integer(table, path, "persistent", 0, 0, MAX_TIMEOUT_S)
        netmask = self.netmask(table, path)
        key = None if _BAD in (protocol, vip, port) else (protocol, vip, port)
        if port == 0 and persistent == 0:
            # ipvsadm process_options(): a port-0 service must be persistent
            self.error(path + ("port",), "Zero port specified for non-persistent service")
            port = _BAD
        reals = self.reals(table, path, port)
        return key, _build(VirtualService, {
            "protocol": protocol, "vip": vip, "port": port, "scheduler": scheduler,
            "reals": reals, "sched_flags": flags, "persistent_s": persistent, "netmask": netmask})

    def fwmark_service(self, table: dict, path: KeyPath) -> tuple[tuple | None, Any]:
        """A firewall-mark service (ipvsadm -f): its mark and the triples that carry it."""
        self.keys(table, path, FWMARK_SERVICE_KEYS)
        mark = self.integer(table, path, "fwmark", _MISSING, 1, UINT_MAX)
        scheduler = self.scheduler(table, path)
        flags = self.flags(table, path, scheduler)
        persistent = self.integer(table, path, "persistent", 0, 0, MAX_TIMEOUT_S)
        netmask = self.netmask(table, path)
        match = []
        for match_path, rule in self.tables(table, path, "match", "[[service.match]]"):
            self.keys(rule, match_path, MATCH_KEYS)
            protocol = self.protocol(rule, match_path)
            vip = self.address(rule, match_path, "vip")
            port = self.integer(rule, match_path, "port", 0, 0, 65535)
            match.append(_BAD if _BAD in (protocol, vip, port) else (protocol, vip, port))
        if not match:
            self.error(path, "a fwmark service needs at least one [[service.match]] rule")
        reals = self.reals(table, path, 0)
        key = None if mark is _BAD else ("fwmark", mark)
        return key, _build(VirtualService, {
            "protocol": "tcp", "vip": "0.0.0.0", "port": 0, "scheduler": scheduler,
            "reals": reals, "sched_flags": flags, "persistent_s": persistent, "netmask": netmask,
            "fwmark": mark, "match": _BAD if (_BAD in match or not match) else tuple(match)})

    def protocol(self, table: dict, path: KeyPath) -> Any:
        protocol = self.get(table, path, "protocol", "string")
        if protocol is not _BAD and protocol not in PROTOCOLS:
            self.error(path + ("protocol",), f"must be 'tcp' or 'udp', got '{protocol}'")
            return _BAD
        return protocol

    def scheduler(self, table: dict, path: KeyPath) -> Any:
        scheduler = self.get(table, path, "scheduler", "string", "wlc")
        if scheduler is not _BAD and scheduler not in SCHEDULERS:
            self.error(path + ("scheduler",), f"unknown scheduler '{scheduler}' "
                                              f"(one of {', '.join(SCHEDULERS)})")
            return _BAD
        return scheduler

    def flags(self, table: dict, path: KeyPath, scheduler: Any) -> Any:
        values = self.get(table, path, "flags", "array", [])
        if values is _BAD:
            return _BAD
        flags, ok = [], True
        for index, flag in enumerate(values):
            if not isinstance(flag, str):
                self.error(path + ("flags", index), f"must be a string, got {toml_type(flag)}")
                ok = False
            elif flag not in SCHED_FLAGS:
                self.error(path + ("flags", index), f"invalid scheduler flag '{flag}' "
                                                    f"(one of {', '.join(SCHED_FLAGS)})")
                ok = False
            elif scheduler is not _BAD and SCHED_FLAGS[flag] != scheduler:
                self.error(path + ("flags", index), f"incompatible scheduler flag '{flag}' "
                                                    f"(only with scheduler '{SCHED_FLAGS[flag]}')")
                ok = False
            elif flag not in flags:
                flags.append(flag)
        return tuple(flags) if ok else _BAD

    def netmask(self, table: dict, path: KeyPath) -> Any:
        default = "255.255.255.255"
        value = self.get(table, path, "persistence_mask", "string", default)
        if value is _BAD or "persistence_mask" not in table:
            return value
        mask = normal_ipv4(value)
        if mask is None or not is_netmask(int(ipaddress.IPv4Address(mask))):
            self.error(path + ("persistence_mask",), f"'{value}' is not a valid netmask")
            return _BAD
        return mask

    def reals(self, service: dict, path: KeyPath, service_port: Any) -> Any:
        built, first = [], {}
        for real_path, table in self.tables(service, path, "real", "[[service.real]]"):
            key, real = self.real(table, real_path, service_port)
            if key in first:
                address, port = key
                self.error(real_path, f"duplicate real server {address}:{port} "
                                      f"(first defined at line {self.locate(first[key])})")
            elif key is not None:
                first[key] = real_path
            built.append(real)
        return _BAD if _BAD in built else tuple(built)

    def real(self, table: dict, path: KeyPath, service_port: Any) -> tuple[tuple | None, Any]:
        """(address, port) if both are valid, and the real server if all is."""
        self.keys(table, path, REAL_KEYS)
        address = self.address(table, path, "address")
        # as ipvsadm -r host without :port, the real server port defaults to the service port
        port = self.integer(table, path, "port", service_port, 0, 65535)
        weight = self.integer(table, path, "weight", 1, 0, 65535)
        upper = self.integer(table, path, "u_threshold", 0, 0, INT_MAX)
        lower = self.integer(table, path, "l_threshold", 0, 0, INT_MAX)
        if upper is not _BAD and lower is not _BAD and lower > upper:
            # ip_vs_add_dest()/ip_vs_edit_dest() refuse this with -ERANGE
            self.error(path + ("l_threshold",),
                       f"lower threshold {lower} is higher than upper threshold {upper}")
            lower = _BAD
        key = None if _BAD in (address, port) else (address, port)
        return key, _build(RealServer, {"address": address, "port": port, "weight": weight,
                                        "u_threshold": upper, "l_threshold": lower})
