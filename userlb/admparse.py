"""`userlb adm ARGS`: ipvsadm 1.31's command line → one frozen AdmCommand.

What it does: reads an ipvsadm argument vector exactly as ipvsadm 1.31 does
(spec/ipvs.md §4.1-4.2): the first option must be the command (-A -E -D -C -a
-e -d -L/-l -Z --set -S -R -h -v, --start-daemon/--stop-daemon), each option at
most once, the commands-versus-options matrix, the same defaults, and the same
error text and exit status (2 for fail(), 255 for "Try `ipvsadm -h'" and popt
errors). Then it applies userlb's limits, each with a clear message.

ipvsadm quirks kept on purpose (operators rely on them):
- -E and -e send a complete definition: an omitted -s is wlc, an omitted -p drops
  persistence, an omitted -M resets the mask to /32, omitted -b clears the flags,
  an omitted -w is weight 1 and omitted -x/-y are 0 (spec §7 point 9).
- `-p` alone is 360 s (the man page says 300); its optional value is taken only
  from a next word that does not start with `-`.
- -b is read after all options against the final -s, so `-b sh-port -s sh` works
  and `-E -b sh-port` without -s fails ("incompatible scheduler flag").
- `-r host` without a port takes the service port as known at that point, so
  `-r host -t vip:80` gives port 0 (kept: harmless for NAT, port 0 keeps the
  client's port).
- Port 0 needs -p ("Zero port specified for non-persistent service"); addresses
  may be written as inet_aton() accepts them (`10.1`, `0x0a000001`).
- -R: ipvsadm ignores `ipvsadm` words and blank lines, stops at the first line
  with an option error, reports operation errors and goes on, and exits with the
  status of the last line (admexec.py).

Deliberate differences:
- Omitted forwarding means -m (NAT), not -g: NAT is the only method userlb has, so
  `-a` without `-m` and `-e` without `-m` keep the server NAT'd (and its port is
  not forced to the service port, which ipvsadm does for -g). -g and -i are
  refused: "userlb supports NAT (-m) only".
- No name resolution unless the caller passes resolvers; listings are always
  numeric, as with -n.
- IPv6 (-6, [addr]), SCTP, -o, --pe and the sync daemon commands are refused with
  a message naming the limit. `-b ,` (which crashes ipvsadm in strtok) is an
  "invalid scheduler flag" error.

Mirrors ipvsadm.c parse_options(), process_options(), generic_opt_check(),
parse_service(), parse_sched_flags(), parse_fwmark(), parse_timeout(). Pure.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable

from userlb import admhelp
from userlb.admcheck import OPT_NAMES, TUN_TYPES, AdmError, check, userlb_limits
from userlb.admpopt import inet_aton, string_to_number, strtol, tokenize
from userlb.services import int_to_ip

MAX_TIMEOUT_S = 86400 * 31
PERSISTENT_TIMEOUT_S = 360          # libipvs.h IPVS_SVC_PERSISTENT_TIMEOUT
HOST_MASK = "255.255.255.255"

COMMANDS = {"A": "add-service", "E": "edit-service", "D": "delete-service", "C": "flush",
            "L": "list", "l": "list", "a": "add-server", "d": "delete-server",
            "e": "edit-server", "set": "set", "start-daemon": "start-daemon",
            "stop-daemon": "stop-daemon", "R": "restore", "S": "save", "Z": "zero",
            "h": "help", "v": "version"}
_OPT_OF_TAG = {"n": 0, "c": 1, "t": 2, "u": 2, "sctp-service": 2, "f": 2, "s": 3, "p": 4,
               "M": 5, "r": 6, "i": 7, "g": 7, "m": 7, "w": 8, "x": 9, "y": 10,
               "mcast-interface": 11, "timeout": 12, "daemon": 13, "stats": 14, "rate": 15,
               "thresholds": 16, "persistent-conn": 17, "nosort": 18, "syncid": 19, "X": 20,
               "o": 21, "pe": 22, "b": 23, "mcast-group": 24, "mcast-port": 25,
               "mcast-ttl": 26, "sync-maxlen": 27, "tun-info": 28, "tun-type": 29,
               "tun-port": 30, "tun-nocsum": 31, "tun-csum": 32, "tun-remcsum": 33}
_PROTOCOL_OF_TAG = {"t": "tcp", "u": "udp", "sctp-service": "sctp"}
_FORWARD_OF_TAG = {"m": "masq", "g": "route", "i": "tunnel"}
_SCHED_FLAGS = {"flag-1": (1, None), "flag-2": (2, None), "flag-3": (4, None),
                "sh-fallback": (1, "sh"), "sh-port": (2, "sh"),
                "mh-fallback": (1, "mh"), "mh-port": (2, "mh")}
_FLAG_NAMES = {"sh": ("sh-fallback", "sh-port", "flag-3"),
               "mh": ("mh-fallback", "mh-port", "flag-3")}


Resolver = Callable[..., "str | int | None"]


@dataclass(frozen=True)
class AdmCommand:
    """One ipvsadm invocation, with ipvsadm's defaults filled in."""

    command: str
    """cmdnames[] name: add-service, edit-service, delete-service, flush, list, add-server,
    delete-server, edit-server, set, restore, save, zero; or help, version."""
    options: frozenset[str] = frozenset()
    """optnames[] of the options given (service-address, scheduler, persistent, ...)."""
    protocol: str = ""
    """"tcp", "udp" or "" (fwmark service, or no service given)."""
    vip: str = "0.0.0.0"
    port: int = 0
    fwmark: int = 0
    scheduler: str = ""
    """-s; "wlc" when omitted on -A/-E (DEF_SCHED); "" elsewhere."""
    sched_flags: tuple[str, ...] = ()
    """-b, as the scheduler names them: sh/mh get sh-*/mh-*, others flag-1..3."""
    persistent_s: int = 0
    """-p timeout; 0 = not persistent."""
    netmask: str = HOST_MASK
    server: str = ""
    """-r address."""
    server_port: int = 0
    forward: str = "masq"
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    timeouts: tuple[int, int, int] | None = None
    """--set tcp tcpfin udp."""
    stdin: str | None = None
    """-R: the rules to restore, one ipvsadm command per line."""
    prog: str = "ipvsadm"

    def has(self, option: str) -> bool:
        return option in self.options

    @property
    def service_key(self) -> tuple[int, int, int]:
        """As VirtualService.key: (protocol, VIP, port), or (0, mark, 0) for -f."""
        if self.fwmark:
            return (0, self.fwmark, 0)
        proto = {"tcp": 6, "udp": 17}.get(self.protocol, 0)
        return (proto, int(ipaddress.IPv4Address(self.vip)), self.port)


@dataclass
class _Entry:
    """ipvsadm's struct ipvs_command_entry while options are read."""

    cmd: str = ""
    options: list[int] = field(default_factory=list)
    protocol: str = ""
    af: int = 4
    addr: int = 0
    port: int = 0
    fwmark: int = 0
    sched: str = ""
    persistent: bool = False
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    ops: bool = False
    pe: str = ""
    flags_arg: str = ""
    dest_af: int = 4
    dest_addr: int = 0
    dest_port: int = 0
    forward: str = ""
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = 0
    daemon_state: str = ""


def parse(argv: list[str], *, prog: str = "ipvsadm", stdin: str | None = None,
          resolve_host: Resolver | None = None, resolve_port: Resolver | None = None,
          reading_stdin: bool = False) -> AdmCommand:
    """argv without the program name → AdmCommand, or AdmError as ipvsadm would fail.

    An empty argv is `-L` (main: argc == 1). `resolve_host(name) -> dotted quad | None`
    and `resolve_port(name, protocol) -> int | None` stand in for gethostbyname and
    getservbyname; without them only numbers are accepted."""
    if not argv:
        return AdmCommand("list", prog=prog)
    ctx = _Parser(prog, resolve_host, resolve_port)
    items = tokenize(list(argv))
    e = ctx.entry
    opts = [it for it in items if it.kind != "leftover"]
    if not opts or opts[0].kind == "error" or opts[0].tag not in COMMANDS:
        raise ctx.tryhelp()
    first = opts[0]
    e.cmd = COMMANDS[first.tag]
    if e.cmd in ("help", "version"):
        return AdmCommand(e.cmd, prog=prog)
    if e.cmd in ("start-daemon", "stop-daemon"):
        if first.arg not in ("master", "backup"):
            raise AdmError(2, "illegal start-daemon parameter specified" if e.cmd == "start-daemon"
                           else "illegal start_daemon specified")
        e.daemon_state = first.arg
    for it in opts[1:]:
        if it.kind == "error":
            raise AdmError(255, f"{it.token}: {it.tag}")
        ctx.option(it)
    leftovers = [it.arg for it in items if it.kind == "leftover"]
    timeouts = None
    if e.cmd == "set":
        if len(leftovers) < 3:
            raise AdmError(2, "--set option requires 3 timeout values")
        timeouts = tuple(_timeout(v, 0, MAX_TIMEOUT_S) for v in leftovers[:3])
        leftovers = leftovers[3:]
    if leftovers:
        raise AdmError(2, f"unexpected argument {leftovers[0]}")
    flags = _sched_flags(e.sched or admhelp.DEF_SCHED, e.flags_arg) if e.flags_arg else 0
    check(e)
    if e.cmd == "restore" and reading_stdin:            # restore_table(): no -R inside -R
        raise ctx.tryhelp()
    userlb_limits(e)
    if e.cmd in ("add-service", "edit-service") and not e.sched:
        e.sched = admhelp.DEF_SCHED
    return AdmCommand(
        command=e.cmd, options=frozenset(OPT_NAMES[j] for j in e.options),
        protocol="" if e.fwmark else e.protocol, vip=int_to_ip(e.addr), port=e.port,
        fwmark=e.fwmark, scheduler=e.sched, sched_flags=_flag_names(e.sched, flags),
        persistent_s=e.timeout if e.persistent else 0, netmask=int_to_ip(e.netmask),
        server=int_to_ip(e.dest_addr) if 6 in e.options else "", server_port=e.dest_port,
        forward=e.forward or "masq",
        weight=e.weight, u_threshold=e.u_threshold, l_threshold=e.l_threshold,
        timeouts=timeouts, stdin=stdin if e.cmd == "restore" else None, prog=prog)


class _Parser:
    """The option loop of parse_options(), one option at a time (fail() = AdmError)."""

    def __init__(self, prog: str, resolve_host, resolve_port) -> None:
        self.prog = prog
        self.entry = _Entry()
        self.resolve_host = resolve_host
        self.resolve_port = resolve_port

    def tryhelp(self) -> AdmError:
        return AdmError(255, f"Try `{self.prog} -h' or '{self.prog} --help' for more information.")

    def set_option(self, tag: str) -> None:
        j = _OPT_OF_TAG[tag]
        if j in self.entry.options:
            raise AdmError(2, f"multiple '{OPT_NAMES[j]}' options specified")
        self.entry.options.append(j)

    def option(self, it) -> None:
        e, tag, arg = self.entry, it.tag, it.arg
        if tag not in _OPT_OF_TAG and tag not in ("6", "sort"):
            raise AdmError(2, f"invalid option `{it.token}'")
        if tag in _OPT_OF_TAG:
            self.set_option(tag)
        if tag in _PROTOCOL_OF_TAG:
            e.protocol = _PROTOCOL_OF_TAG[tag]
            parsed = self.service(arg, e.protocol)
            if parsed is None:
                raise AdmError(2, "illegal virtual server address[:port] specified")
            e.af, e.addr, port = parsed
            e.port = e.port if port is None else port
        elif tag == "f":
            e.af, e.protocol, e.fwmark = 4, "tcp", _fwmark(arg)
        elif tag == "s":
            e.sched = arg[:15]                  # IP_VS_SCHEDNAME_MAXLEN - 1
        elif tag == "p":
            e.persistent, e.timeout = True, _timeout(arg, 1, MAX_TIMEOUT_S)
        elif tag == "M":
            if e.af == 6:
                if not 1 <= (strtol(arg.split()[0] if arg.split() else "") or 0) <= 128:
                    raise AdmError(2, "illegal ipv6 netmask specified")
                return
            mask = self.host(arg)
            if mask is None:
                raise AdmError(2, "illegal virtual server persistent mask specified")
            e.netmask = mask
        elif tag == "r":
            parsed = self.service(arg, e.protocol)
            if parsed is None:
                raise AdmError(2, "illegal real server address[:port] specified")
            e.dest_af, e.dest_addr, port = parsed
            e.dest_port = e.port if port is None else port   # "copy vport to dport"
        elif tag in _FORWARD_OF_TAG:
            e.forward = _FORWARD_OF_TAG[tag]
        elif tag in ("w", "x", "y"):
            name, high = {"w": ("weight", 65535), "x": ("u_threshold", 2**31 - 1),
                          "y": ("l_threshold", 2**31 - 1)}[tag]
            value = string_to_number(arg, 0, high)
            if value == -1:
                raise AdmError(2, f"illegal {name} specified")
            setattr(e, name, value)
        elif tag == "6":
            if not e.fwmark:
                raise AdmError(2, "-6 used before -f\n")
            e.af = 6
        elif tag == "o":
            e.ops = True
        elif tag == "pe":
            e.pe = arg[:16]
        elif tag == "b":
            e.flags_arg = arg[:127]
        else:
            _daemon_option(e, tag, arg)

    def host(self, text: str) -> int | None:
        """inet_aton, then the resolver (gethostbyname)."""
        value = inet_aton(text)
        if value is None and self.resolve_host is not None:
            name = self.resolve_host(text)
            value = inet_aton(name) if name else None
        return value

    def service(self, buf: str, protocol: str) -> tuple[int, int, int | None] | None:
        """parse_service(): (af, address, port or None if not given), None = SERVICE_NONE."""
        if not buf or buf.isascii() and buf.isdigit():
            return None
        port_text = None
        if buf.startswith("["):
            host, sep, rest = buf[1:].partition("]")
            if not sep or not rest.startswith(":"):
                return None
            buf, port_text = host, rest[1:]
        if _is_ipv6(buf):
            af, addr = 6, 0
        else:
            if port_text is None and ":" in buf:
                buf, _, port_text = buf.rpartition(":")
            af, addr = 4, self.host(buf)
            if addr is None:
                return None
        if port_text is None:
            return af, addr, None
        port = string_to_number(port_text, 0, 65535)
        if port == -1 and self.resolve_port is not None:
            port = self.resolve_port(port_text, protocol) or -1
        return None if port == -1 else (af, addr, port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        return False


def _daemon_option(e: _Entry, tag: str, arg: str | None) -> None:
    """Sync-daemon and tunnel options: checked as ipvsadm checks them, then unused."""
    ranges = {"syncid": (0, 255, "syncid"), "mcast-port": (1, 65535, "mcast-port"),
              "mcast-ttl": (1, 255, "mcast-ttl"), "sync-maxlen": (1, 65535 - 20 - 8, "sync-maxlen"),
              "tun-port": (1, 65535, "tunnel port")}
    if tag in ranges:
        low, high, name = ranges[tag]
        if string_to_number(arg, low, high) == -1:
            raise AdmError(2, f"illegal {name} specified")
    elif tag == "mcast-group":
        _mcast_group(arg)
    elif tag == "tun-type":
        if arg not in TUN_TYPES:
            raise AdmError(2, "illegal tunnel type specified")
        e.tun_type = TUN_TYPES.index(arg)


def _mcast_group(arg: str) -> None:
    if ":" in arg:
        try:
            ok = ipaddress.IPv6Address(arg).is_multicast
        except ValueError:
            ok = False
        if not ok:
            raise AdmError(2, f"invalid IPv6 mcast-group `{arg}'")
        return
    try:
        ok = ipaddress.IPv4Address(arg).is_multicast
    except ValueError:
        ok = False
    if not ok:
        raise AdmError(2, f"invalid IPv4 mcast-group `{arg}'")


def _timeout(text: str | None, low: int, high: int) -> int:
    """parse_timeout(): no value (bare -p) is 360 s."""
    if text is None:
        return PERSISTENT_TIMEOUT_S
    value = string_to_number(text, low, high)
    if value == -1:
        raise AdmError(2, f"invalid timeout value `{text}' specified")
    return value


def _fwmark(text: str) -> int:
    value = strtol(text)
    if value is None or value <= 0 or value > 0xFFFFFFFF:
        raise AdmError(2, f"invalid fwmark value `{text}' specified")
    return value


def _sched_flags(sched: str, arg: str) -> int:
    """parse_sched_flags(): comma list → IP_VS_SVC_F_SCHED1..3 bits (1, 2, 4 here)."""
    bits = 0
    names = [f for f in arg.split(",") if f] or [""]
    for flag in names:
        if flag not in _SCHED_FLAGS:
            raise AdmError(2, f"invalid scheduler flag `{flag}'")
        bit, only = _SCHED_FLAGS[flag]
        if only is not None and only != sched:
            raise AdmError(2, f"incompatible scheduler flag `{flag}'")
        bits |= bit
    return bits


def _flag_names(sched: str, bits: int) -> tuple[str, ...]:
    """Bits → names as print_sched_flags() shows them for this scheduler."""
    names = _FLAG_NAMES.get(sched, ("flag-1", "flag-2", "flag-3"))
    return tuple(name for k, name in enumerate(names) if bits & (1 << k))
