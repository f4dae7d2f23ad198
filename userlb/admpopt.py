"""ipvsadm's option table and the popt tokenizing rules it relies on, plus C parsers.

What it does: splits an ipvsadm argument vector into (tag, argument, token)
items in order, the way ipvsadm 1.31's poptGetNextOpt() loop sees them:
clustered short options (`-Ln`), attached arguments (`-w5`, `--weight=5`),
required arguments taken from the next word even if it starts with `-`, the
optional argument of `-p` taken only from a next word that does not start with
`-`, `--` ending the options and every other word kept as a leftover argument.
A popt error (unknown option, missing or unwanted argument) ends the stream with
an ("error", message, token) item, as poptGetNextOpt returns < -1. Also the C
number and address readers ipvsadm uses: strtol() as string_to_number() applies
it, and glibc's inet_aton() (which accepts `10.1`, `0x0a.0.0.1`, octal parts).

What it does not do: decide what an option means (admparse.py does) or resolve
names. Pure.

Mirrors ipvsadm.c parse_options() options_table[], popt's poptGetNextOpt() /
poptBadOption() / poptStrerror(), and glibc inet_aton().
"""

from __future__ import annotations

import re
from dataclasses import dataclass
NONE, REQUIRED, OPTIONAL = 0, 1, 2


@dataclass(frozen=True)
class Option:
    long: str
    short: str
    arg: int
    tag: str
    """What admparse switches on: the short letter, or the long name for long-only options."""


def _o(long: str, short: str, arg: int = NONE, tag: str | None = None) -> Option:
    return Option(long, short, arg, tag or short or long)


# ipvsadm.c options_table[], in its order (popt searches it in order)
OPTIONS: tuple[Option, ...] = (
    _o("add-service", "A"), _o("edit-service", "E"), _o("delete-service", "D"),
    _o("clear", "C"), _o("list", "L"), _o("list", "l"), _o("zero", "Z"),
    _o("add-server", "a"), _o("edit-server", "e"), _o("delete-server", "d"),
    _o("set", ""), _o("help", "h"), _o("version", "v"), _o("restore", "R"), _o("save", "S"),
    _o("start-daemon", "", REQUIRED), _o("stop-daemon", "", REQUIRED),
    _o("tcp-service", "t", REQUIRED), _o("udp-service", "u", REQUIRED),
    _o("sctp-service", "", REQUIRED), _o("fwmark-service", "f", REQUIRED),
    _o("scheduler", "s", REQUIRED), _o("persistent", "p", OPTIONAL),
    _o("netmask", "M", REQUIRED), _o("real-server", "r", REQUIRED),
    _o("masquerading", "m"), _o("ipip", "i"), _o("gatewaying", "g"),
    _o("weight", "w", REQUIRED), _o("u-threshold", "x", REQUIRED),
    _o("l-threshold", "y", REQUIRED), _o("numeric", "n"), _o("connection", "c"),
    _o("mcast-interface", "", REQUIRED), _o("syncid", "", REQUIRED),
    _o("timeout", ""), _o("daemon", ""), _o("stats", ""), _o("rate", ""),
    _o("thresholds", ""), _o("persistent-conn", ""), _o("nosort", ""), _o("sort", ""),
    _o("exact", "X"), _o("ipv6", "6"), _o("ops", "o"), _o("pe", "", REQUIRED),
    _o("sched-flags", "b", REQUIRED), _o("mcast-group", "", REQUIRED),
    _o("mcast-port", "", REQUIRED), _o("mcast-ttl", "", REQUIRED),
    _o("sync-maxlen", "", REQUIRED), _o("tun-info", ""), _o("tun-type", "", REQUIRED),
    _o("tun-port", "", REQUIRED), _o("tun-nocsum", ""), _o("tun-csum", ""),
    _o("tun-remcsum", ""),
)
_BY_LONG = {}
for _opt in OPTIONS:
    _BY_LONG.setdefault(_opt.long, _opt)        # "list": the first entry (-L) wins, as popt
_BY_SHORT = {o.short: o for o in OPTIONS if o.short}

# poptStrerror()
ERR_NOARG = "missing argument"
ERR_BADOPT = "unknown option"
ERR_UNWANTEDARG = "option does not take an argument"


@dataclass(frozen=True)
class Item:
    """One thing poptGetNextOpt() returned: an option, a leftover word, or an error."""

    kind: str
    """"option", "leftover" or "error"."""
    tag: str
    """Option tag (see Option.tag); the error message for "error"; "" for leftovers."""
    arg: str | None
    """The option's argument (None when it has none), or the leftover word."""
    token: str
    """The argv word poptBadOption() would name for this item."""


def tokenize(argv: list[str]) -> list[Item]:
    """Options and leftovers in order, ending at (and with) the first popt error."""
    items: list[Item] = []
    i, rest = 0, False
    while i < len(argv) and not (items and items[-1].kind == "error"):
        word = argv[i]
        i += 1
        if rest or not word.startswith("-") or word == "-":
            items.append(Item("leftover", "", word, word))
        elif word == "--":
            rest = True
        elif word.startswith("--"):
            i = _long(word, argv, i, items)
        else:
            i = _cluster(word, argv, i, items)
    return items


def _long(word: str, argv: list[str], i: int, items: list[Item]) -> int:
    """`--name`, `--name=value` or `--name value`; returns the next argv index."""
    name, eq, value = word[2:].partition("=")
    opt = _BY_LONG.get(name)
    if opt is None:
        items.append(Item("error", ERR_BADOPT, None, word))
    elif opt.arg == NONE and eq:
        items.append(Item("error", ERR_UNWANTEDARG, None, word))
    elif eq or opt.arg == NONE:
        items.append(Item("option", opt.tag, value if eq else None, word))
    else:
        arg, i, err = _next_arg(opt, argv, i)
        items.append(Item("error", err, None, word) if err else
                     Item("option", opt.tag, arg, argv[i - 1] if arg is not None else word))
    return i


def _cluster(word: str, argv: list[str], i: int, items: list[Item]) -> int:
    """Short options of one word (`-Ln`, `-w5`, `-w 5`); returns the next argv index."""
    pos = 1
    while pos < len(word):
        opt = _BY_SHORT.get(word[pos])
        pos += 1
        if opt is None:
            items.append(Item("error", ERR_BADOPT, None, word))
            return i
        if opt.arg == NONE:
            items.append(Item("option", opt.tag, None, word))
        elif pos < len(word):                   # the rest of the word is the argument
            items.append(Item("option", opt.tag, word[pos:], word))
            return i
        else:
            arg, i, err = _next_arg(opt, argv, i)
            items.append(Item("error", err, None, word) if err else
                         Item("option", opt.tag, arg, argv[i - 1] if arg is not None else word))
            return i
    return i


def _next_arg(opt: Option, argv: list[str], i: int) -> tuple[str | None, int, str | None]:
    """(argument, next index, error) for an option whose argument is not attached."""
    if i >= len(argv):
        return None, i, (ERR_NOARG if opt.arg == REQUIRED else None)
    if opt.arg == OPTIONAL and argv[i].startswith("-"):
        return None, i, None
    return argv[i], i + 1, None


# -- C number and address readers -------------------------------------------------

_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)\Z")


def strtol(text: str) -> int | None:
    """strtol(s, &end, 10) with `*end == '\\0' && end != s`: the value, or None."""
    m = _STRTOL.match(text)
    return int(m.group(1)) if m else None


def string_to_number(text: str, low: int, high: int) -> int:
    """ipvsadm string_to_number(): the value if in [low, high], else -1."""
    value = strtol(text)
    if value is None or not low <= value <= high or abs(value) >= 2**63:
        return -1
    return value


def inet_aton(text: str) -> int | None:
    """glibc inet_aton(): a, a.b, a.b.c or a.b.c.d, each part decimal, 0x-hex or 0-octal;
    anything after a whitespace character is ignored. Host-order u32, or None."""
    parts, pos, n = [], 0, len(text)
    while True:
        if pos >= n or not text[pos].isdigit() or not text[pos].isascii():
            return None
        value, base, digit = 0, 10, False
        if text[pos] == "0":
            pos += 1
            if pos < n and text[pos] in "xX":
                base, pos = 16, pos + 1
            else:
                base, digit = 8, True
        while pos < n:
            c = text[pos]
            if c.isascii() and c.isdigit():
                if base == 8 and c in "89":
                    return None
                value = value * base + int(c)
            elif base == 16 and c in "0123456789abcdefABCDEF":
                value = value * 16 + int(c, 16)
            else:
                break
            digit, pos = True, pos + 1
            if value > 0xFFFFFFFF:
                return None
        if pos < n and text[pos] == ".":
            if len(parts) > 2 or value > 0xFF:
                return None
            parts.append(value)
            pos += 1
            continue
        break
    if pos < n and text[pos] not in " \t\n\v\f\r" or not digit:
        return None
    if value > (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)[len(parts)]:
        return None
    for k, part in enumerate(parts):
        value |= part << (24 - 8 * k)
    return value
