"""Shared pieces of the foreign config readers (lvs.cf, keepalived.conf).

What it does: collects errors and warnings as `ConfigIssue(path, line, message)`
(a warning's message starts with "warning: ", so `str(issue)` prints as
`path:line: warning: ...`, as compilers do); splits text into numbered lines
with LF, CRLF or lone CR endings; checks IPv4 addresses, netmasks, interface
names and duplicate services with the words config.py/configcheck.py use; and
derives the router's client/server interfaces from floating addresses.

`read_text(path)` is the one file read (UTF-8, unreadable → ConfigError).

What it does not do: know either grammar (lvscf*, keepalived*).
Mirrors the kernel's dev_valid_name() and ipvsadm's limits via configcheck.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from os import PathLike

from .config import (ConfigError, ConfigIssue, RouterConfig, is_netmask, normal_ipv4,
                     read_text)
from .configcheck import IFNAMSIZ
from .hasettings import FloatingAddress
from .services import VirtualService

_EOL = re.compile(r"\r\n|\r|\n")


class OrderedConfigError(ConfigError):
    """A ConfigError whose issues keep the reader's order (file by file, then by line)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        Exception.__init__(self, "\n".join(str(issue) for issue in self.issues))


@dataclass
class Issues:
    """Errors and warnings found so far; `fail()` raises if there is any error."""

    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """Files in the order they were read (the main file first), for sorting."""

    def error(self, path: str, line: int, message: str) -> None:
        self.errors.append(ConfigIssue(path, line, message))

    def warn(self, path: str, line: int, message: str) -> None:
        self.warnings.append(ConfigIssue(path, line, f"warning: {message}"))

    def reading(self, path: str) -> None:
        """Note that `path` is being read (errors sort by the order files were read)."""
        if path not in self.files:
            self.files.append(path)

    def fail(self) -> None:
        """Raise OrderedConfigError with every error, sorted by (file order, line)."""
        if self.errors:
            order = {path: index for index, path in enumerate(self.files)}
            for issue in self.errors:
                order.setdefault(issue.path, len(order))
            raise OrderedConfigError(sorted(self.errors, key=lambda i: (order[i.path], i.line)))

    def sorted_warnings(self) -> tuple[ConfigIssue, ...]:
        """The warnings by (file order, line)."""
        order = {path: index for index, path in enumerate(self.files)}
        for issue in self.warnings:
            order.setdefault(issue.path, len(order))
        return tuple(sorted(self.warnings, key=lambda i: (order[i.path], i.line)))


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, text) for each line; CRLF, LF and lone CR all end a line."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _EOL.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return list(enumerate(lines, start=1))


def unicast(text: str) -> str:
    """Canonical dotted quad of a usable unicast IPv4 address; ValueError naming the problem."""
    address = normal_ipv4(text)
    if address is None:
        raise ValueError(f"'{text}' is not a valid IPv4 address")
    ip = ipaddress.IPv4Address(address)
    kind = ("unspecified" if ip.is_unspecified else "loopback" if ip.is_loopback
            else "multicast" if ip.is_multicast
            else "broadcast" if address == "255.255.255.255" else None)
    if kind:
        raise ValueError(f"{address} is not a usable unicast address ({kind})")
    return address


def netmask(text: str) -> str:
    """Canonical dotted-quad netmask; ValueError if not a contiguous IPv4 mask."""
    mask = normal_ipv4(text)
    if mask is None or not is_netmask(int(ipaddress.IPv4Address(mask))):
        raise ValueError(f"'{text}' is not a valid netmask")
    return mask


def prefixlen(mask: str) -> int:
    """255.255.255.0 → 24."""
    return bin(int(ipaddress.IPv4Address(mask))).count("1")


def interface(name: str) -> str:
    """`name` if the kernel would accept it as an interface name (dev_valid_name)."""
    if (not 0 < len(name) < IFNAMSIZ or name in (".", "..")
            or any(ch in "/:" or ch.isspace() for ch in name)):
        raise ValueError(f"'{name}' is not a valid interface name "
                         "(1..15 characters, no '/', ':' or whitespace)")
    return name


def alias_device(label: str) -> str:
    """The interface of an alias label: "eth0:1" → "eth0" (validated)."""
    return interface(label.split(":", 1)[0])


def service_key_text(service: VirtualService) -> str:
    """"TCP 198.18.1.100:80", as configcheck's duplicate message."""
    return f"{service.protocol.upper()} {service.vip}:{service.port}"


def router_for(floating: tuple[FloatingAddress, ...], vips: set[str]) -> RouterConfig:
    """RouterConfig whose client interface holds a VIP and whose server interface holds
    another floating address (the NAT gateway); defaults where nothing says."""
    default = RouterConfig()
    client = next((f.device for f in floating if f.address in vips and f.device), None)
    server = next((f.device for f in floating
                   if f.address not in vips and f.device and f.device != client), None)
    return RouterConfig(client_interface=client or default.client_interface,
                        server_interface=server or default.server_interface)
