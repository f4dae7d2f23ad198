"""Piranha lvs.cf: tokenizer and grammar → typed sections, every problem as `path:line: message`.

What it does: splits the text into lines (LF, CRLF or lone CR), tokens (blanks
separate; a token opening with `"` or `'` runs to the matching quote), and
statements `key = value [value2]` inside the global section, `virtual NAME {`,
`failover NAME {` and `server NAME {` blocks closed by a line `}`. Each value is
converted as Piranha does (integers via strtol base 0, so `010` is 8; booleans
0/1; ports by number or service name; IPv4 addresses; netmasks). All errors are
collected, not just the first; the words are lvsconfig.c's lvsStrerror().

What it does not do: resolve host names (userlb takes IPv4 literals only) or
give meaning to the values (lvscf.py maps them onto Config, health, HA).

Mirrors piranha 0.8.6 lvsconfig.c (spec §1.2–1.5): a line whose first non-blank
is `#` is a comment, but `#` later in a line is just another token ("unexpected
arguments"); unknown keys are errors ("unknown command"); a repeated key is
allowed and the last one wins (warned here). Deliberately not mirrored: CRLF
files work on every line (0.8.6 sees only the first, §1.2), and quoted tokens
may contain the other quote character.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .conftext import Issues, alias_device, netmask, numbered_lines, unicast

_INTEGER = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_OCTAL = re.compile(r"[+-]?0[0-7]+")
SERVICE_PORTS = {"ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "http": 80,
                 "www": 80, "pop3": 110, "nntp": 119, "imap": 143, "snmp": 161, "ldap": 389,
                 "https": 443, "imaps": 993, "pop3s": 995, "mysql": 3306, "postgresql": 5432}
"""Service names `port =` accepts (a fixed subset of /etc/services; nothing is looked up)."""
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh")
"""The schedulers lvs.cf knows (lvsconfig.c); other IPVS names are "invalid argument"."""


def integer(text: str) -> int:
    """strtol(text, &end, 0) with *end required to be NUL."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"integer expected, got '{text}'")
    return int(text, 0) if not _OCTAL.fullmatch(text) else int(text, 8)


def boolean(text: str) -> bool:
    value = integer(text)
    if value not in (0, 1):
        raise ValueError(f"boolean expected (0 or 1), got '{text}'")
    return bool(value)


def port(text: str) -> int:
    try:
        value = integer(text)
    except ValueError:
        if text in SERVICE_PORTS:
            return SERVICE_PORTS[text]
        raise ValueError(f"invalid argument: '{text}' is neither a port number "
                         "nor a known service name") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be in 0..65535, got {value}")
    return value


def host(text: str) -> str:
    try:
        return unicast(text)
    except ValueError as exc:
        if re.fullmatch(r"[0-9.]+", text):
            raise
        raise ValueError(f"invalid host name or ip address '{text}' "
                         "(userlb does not resolve host names)") from exc


def mask(text: str) -> str:
    try:
        return netmask(text)
    except ValueError:
        raise ValueError(f"Bad subnet mask specified: '{text}'") from None


def choice(*names: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in names:
            raise ValueError(f"invalid argument '{text}' (one of {', '.join(names)})")
        return text
    return convert


def text(value: str) -> str:
    return value


def _address_device(values: tuple[str, ...]) -> tuple[str, str]:
    address, label = values
    alias_device(label)
    return host(address), label


# key → (number of values, converter); a converter of 2 values gets the tuple
GLOBAL_KEYS: dict[str, tuple[int, Callable]] = {
    "serial_no": (1, integer), "service": (1, choice("lvs", "fos")), "primary": (1, host),
    "primary_private": (1, host), "primary_shared": (1, text), "backup": (1, host),
    "backup_private": (1, host), "backup_shared": (1, text),
    "reservation_conflict_action": (1, choice("nothing", "preempt")),
    "backup_active": (1, boolean), "heartbeat": (1, boolean), "heartbeat_port": (1, port),
    "keepalive": (1, integer), "deadtime": (1, integer),
    "network": (1, choice("nat", "direct", "tunnel")), "nat_router": (2, _address_device),
    "nat_nmask": (1, mask), "debug_level": (1, text), "monitor_links": (1, integer),
    "syncdaemon": (1, boolean), "syncd_iface": (1, text), "syncd_id": (1, integer),
    "tcp_timeout": (1, integer), "tcpfin_timeout": (1, integer), "udp_timeout": (1, integer),
    "active_cmd": (1, text), "inactive_cmd": (1, text), "hard_shutdown": (1, boolean),
    "ipvsadm": (1, text), "rsh_command": (1, text), "sync": (1, boolean),
}
VIRTUAL_KEYS: dict[str, tuple[int, Callable]] = {
    "active": (1, boolean), "address": (2, _address_device), "sorry_server": (1, host),
    "vip_nmask": (1, mask), "fwmark": (1, integer), "protocol": (1, choice("tcp", "udp")),
    "port": (1, port), "scheduler": (1, choice(*SCHEDULERS)), "persistent": (1, integer),
    "pmask": (1, mask), "client_monitor": (1, text), "send_program": (1, text),
    "send": (1, text), "expect": (1, text), "use_regex": (1, boolean),
    "timeout": (1, integer), "reentry": (1, integer), "load_monitor": (1, text),
    "quiesce_server": (1, boolean), "start_cmd": (1, text), "stop_cmd": (1, text),
    "master": (1, host), "dirs": (-1, tuple),
}
SERVER_KEYS: dict[str, tuple[int, Callable]] = {
    "address": (1, host), "active": (1, boolean), "weight": (1, integer), "port": (1, integer),
}
KEYS = {"global": GLOBAL_KEYS, "virtual": VIRTUAL_KEYS, "failover": VIRTUAL_KEYS,
        "server": SERVER_KEYS}
BLOCKS = {"global": ("virtual", "failover"), "virtual": ("server",), "failover": ("server",),
          "server": ()}
"""Which blocks may open inside which (lvsconfig.c parseConfiguration/parseVirtualServer)."""


@dataclass(frozen=True)
class Entry:
    """One `key = value` statement, its value converted."""

    key: str
    value: Any
    """int, bool or str; a (address, device label) pair for the two-value keys; a tuple for dirs."""
    line: int


@dataclass
class Section:
    """The global section or one block, with its statements (last one wins) and blocks."""

    kind: str
    """"global", "virtual", "failover" or "server"."""
    name: str = ""
    line: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    children: list["Section"] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    """Keys given with a bad value (already reported; not "missing" as well)."""

    def given(self, key: str) -> bool:
        """True if `key` was written, even with a bad value."""
        return key in self.entries or key in self.failed

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.entries.get(key)
        return default if entry is None else entry.value

    def line_of(self, key: str) -> int:
        """Line of `key`, or of the block header when the key is absent."""
        entry = self.entries.get(key)
        return entry.line if entry else self.line


def tokenize(line: str) -> list[str]:
    """Blank-separated tokens; quotes are removed; ValueError on an unclosed quote."""
    tokens, i, n = [], 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
        elif line[i] in "\"'":
            end = line.find(line[i], i + 1)
            if end < 0:
                raise ValueError("quotation mismatch")
            tokens.append(line[i + 1:end])
            i = end + 1
        else:
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            tokens.append(line[i:j])
            i = j
    return tokens


def parse(text_: str, path: str, issues: Issues) -> Section:
    """The whole file as a tree rooted at the global section; problems go to `issues`."""
    root = Section("global")
    stack = [root]
    for number, raw in numbered_lines(text_):
        stripped = raw.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            tokens = tokenize(stripped)
        except ValueError as exc:
            issues.error(path, number, str(exc))
            continue
        _statement(tokens, stack, number, path, issues)
    for section in stack[:0:-1]:
        issues.error(path, section.line, f"unexpected end of file: '{section.kind} "
                                         f"{section.name}' has no closing '}}'")
    return root


def _statement(tokens: list[str], stack: list[Section], number: int, path: str,
               issues: Issues) -> None:
    current = stack[-1]
    if tokens[0] == "}":
        if len(stack) == 1:
            issues.error(path, number, "unexpected '}' (no block is open)")
        else:
            stack.pop()
            if len(tokens) > 1:
                issues.error(path, number, "unexpected arguments after '}'")
    elif tokens[0] in BLOCKS[current.kind]:
        section = _open(tokens, number, path, issues)
        if section is not None:
            current.children.append(section)
            stack.append(section)
    else:
        _entry(tokens, current, number, path, issues)


def _open(tokens: list[str], number: int, path: str, issues: Issues) -> Section | None:
    """The block a `kind NAME {` line opens; a malformed header that still ends in '{' opens
    one too (so its body is not misread as the enclosing block's)."""
    kind, usage = tokens[0], f"({tokens[0]} NAME {{)"
    if tokens[-1] != "{":
        issues.error(path, number, f"missing arguments {usage}")
        return None
    if len(tokens) != 3:
        problem = "missing" if len(tokens) < 3 else "unexpected"
        issues.error(path, number, f"{problem} arguments {usage}")
    return Section(kind, tokens[1] if len(tokens) > 2 else "", number)


def _entry(tokens: list[str], section: Section, number: int, path: str,
           issues: Issues) -> None:
    keys = KEYS[section.kind]
    key = tokens[0]
    if key not in keys:
        hint = difflib.get_close_matches(key, list(keys) + list(BLOCKS[section.kind]), n=1)
        where = "global section" if section.kind == "global" else f"{section.kind} block"
        issues.error(path, number, f"unknown command '{key}' in {where}"
                                   + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        return
    count, convert = keys[key]
    message = _arity(tokens, count)
    values = tuple(tokens[2:])
    try:
        if message:
            raise ValueError(message)
        value = _convert(values, count, convert)
    except ValueError as exc:
        issues.error(path, number, f"{key}: {exc}")
        section.failed.add(key)
        return
    if count == 1 and convert in (integer, boolean) and _OCTAL.fullmatch(values[0]):
        issues.warn(path, number, f"{key}: '{values[0]}' is octal (= {value}), "
                                  "as Piranha's strtol reads it")
    if key in section.entries:
        issues.warn(path, number, f"{key}: given again (first at line "
                                  f"{section.entries[key].line}); the last one counts")
    section.entries[key] = Entry(key, value, number)


def _arity(tokens: list[str], count: int) -> str:
    if len(tokens) < 2 or tokens[1] != "=":
        return "equal (=) expected after command"
    if count < 0:
        return "" if tokens[2:3] == ["["] and tokens[-1] == "]" else "list expected"
    if len(tokens) < count + 2:
        return "missing arguments" + (f" (expected {count} values)" if count > 1 else "")
    if len(tokens) > count + 2:
        extra = tokens[count + 2]
        return "unexpected arguments" + (" (lvs.cf has no trailing comments)"
                                         if extra.startswith("#") else f" ('{extra}')")
    return ""


def _convert(values: tuple[str, ...], count: int, convert: Callable) -> Any:
    if count < 0:
        return values[1:-1]
    return convert(values) if count > 1 else convert(values[0])
