"""ipvsadm 1.31 listings, byte for byte, from plain snapshot dataclasses.

What it does: turns `ServiceView`/`DestView`/`ConnView` snapshots into the text
`ipvsadm -L -n` prints, with all its variants (`--stats`, `--rate`, `--exact`,
`--thresholds`, `--persistent-conn`, `-c`, `--timeout`) and `ipvsadm -S -n`,
including the trailing spaces of the left-aligned last columns. What it does not
do: gather numbers (the engine fills the views) or resolve names (userlb output
is always numeric, as with -n). IPv4 only.

Mirrors ipvsadm.c print_title(), print_service_entry(), print_sched_flags(),
print_largenum(), print_conn(), list_all(), list_timeout(), and libipvs's
ipvs_cmp_services()/ipvs_cmp_dests() for the sort order (spec ipvs.md §4.3, §4.4).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cmp_to_key
from typing import Iterable

from .services import int_to_ip, ip_to_int

IPVS_VERSION = "1.2.1"
"""The IPVS version ipvsadm shows in its first line (IP_VS_VERSION_CODE 0x010201)."""

_PROTOCOL_NUMBERS = {"ip": 0, "tcp": 6, "udp": 17, "sctp": 132}
_PROTOCOL_NAMES = {0: "IP", 6: "TCP", 17: "UDP", 132: "SCTP"}
_SAVE_OPTIONS = {6: "-t", 17: "-u", 132: "--sctp-service"}  # option_from_protocol()
_FORWARD_SWITCHES = {"Masq": "-m", "Tunnel": "-i", "Local": "-g", "Route": "-g"}  # fwd_switch()
# IP_VS_SVC_F_SCHED1..3: sh-fallback/mh-fallback share bit 1, sh-port/mh-port bit 2
_FLAG_BITS = {"flag-1": 1, "flag-2": 2, "flag-3": 4, "sh-fallback": 1, "sh-port": 2,
              "mh-fallback": 1, "mh-port": 2}
_FLAG_NAMES = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
_GENERIC_FLAG_NAMES = ("flag-1", "flag-2", "flag-3")
_HOST_MASK = "255.255.255.255"


@dataclass(frozen=True)
class DestView:
    """One real server as a listing shows it: configuration, counters, statistics, rates."""

    address: str | int
    """Dotted quad or host-order u32."""
    port: int
    """Real server port."""
    weight: int = 1
    active: int = 0
    """activeconns."""
    inactive: int = 0
    """inactconns."""
    persist: int = 0
    """persistconns (templates pointing here)."""
    u_threshold: int = 0
    l_threshold: int = 0
    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    """Connections per second, as the estimator reports it (§3.11)."""
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    """Incoming bytes per second."""
    outbps: int = 0
    forward: str = "Masq"
    """Forwarding method name: Masq (the only one userlb does), Local, Tunnel, Route."""


@dataclass(frozen=True)
class ServiceView:
    """One virtual service with its real servers and its own statistics."""

    protocol: str | int
    """"tcp"/"udp" (any case) or the IP protocol number."""
    vip: str | int
    """Dotted quad or host-order u32; ignored for fwmark services."""
    port: int
    fwmark: int = 0
    """Firewall mark; non-zero makes this an `FWM  <mark>` service."""
    scheduler: str = "wlc"
    flags: tuple[str, ...] = ()
    """Scheduler flags: sh-fallback, sh-port, mh-fallback, mh-port, flag-1..3."""
    persistent_s: int = 0
    """Persistence timeout in seconds; 0 = not persistent."""
    netmask: str | int = _HOST_MASK
    """Persistence mask; printed only when persistent and not /32."""
    dests: tuple[DestView, ...] = ()
    """Real servers, in any order (the listing sorts them unless sort=False)."""
    ops: bool = False
    """One-packet scheduling (prints ` ops` / ` -o`)."""
    pe: str = ""
    """Persistence engine name; empty for none."""
    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True)
class ConnView:
    """One connection-table entry (or persistence template) for `ipvsadm -L -n -c`."""

    protocol: str | int
    """"tcp"/"udp"/"ip" or the protocol number; 0 ("IP") for fwmark templates."""
    expires_s: float
    """Absolute time its timer fires, on the same clock as `now`."""
    state: str
    """State name as printed: ESTABLISHED, SYN_RECV, UDP, NONE, ASSURED, ..."""
    caddr: str | int
    cport: int
    vaddr: str | int
    """VIP, or the fwmark as an address for fwmark templates (mark 7 → 0.0.0.7)."""
    vport: int
    daddr: str | int
    dport: int


# -- shared pieces -------------------------------------------------------------

def format_largenum(value: int, exact: bool = False) -> str:
    """print_largenum(): 9 columns, K/M/G/T above 10^8 unless exact."""
    if exact:
        digits = str(value)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    for limit, divisor, suffix in ((10**8, 1, ""), (10**9, 10**3, "K"), (10**11, 10**6, "M"),
                                   (10**14, 10**9, "G")):
        if value < limit:
            return f"{value // divisor:8d}{suffix}" if suffix else f"{value:9d}"
    return f"{value // 10**12:8d}T"


def _ip(address: str | int) -> str:
    return address if isinstance(address, str) else int_to_ip(int(address))


def _ip_int(address: str | int) -> int:
    return ip_to_int(address) if isinstance(address, str) else int(address)


def _proto(protocol: str | int) -> int:
    return _PROTOCOL_NUMBERS[protocol.lower()] if isinstance(protocol, str) else int(protocol)


def _c_int(value: int) -> int:
    """The C `int` a subtraction of unsigned values yields (wraps at 2^31)."""
    return (value + 2**31) % 2**32 - 2**31


def _cmp_services(a: ServiceView, b: ServiceView) -> int:
    # ipvs_cmp_services(): fwmark, af (all AF_INET), protocol, address, port, as C ints
    for x, y in ((a.fwmark, b.fwmark), (_proto(a.protocol), _proto(b.protocol)),
                 (_ip_int(a.vip), _ip_int(b.vip)), (a.port, b.port)):
        r = _c_int(x - y)
        if r:
            return r
    return 0


def _cmp_dests(a: DestView, b: DestView) -> int:
    # ipvs_cmp_dests(): address then port, as C ints
    return _c_int(_ip_int(a.address) - _ip_int(b.address)) or _c_int(a.port - b.port)


def _sorted_services(services: Iterable[ServiceView], sort: bool) -> list[ServiceView]:
    services = list(services)
    return sorted(services, key=cmp_to_key(_cmp_services)) if sort else services


def _sorted_dests(service: ServiceView, sort: bool) -> list[DestView]:
    dests = list(service.dests)
    return sorted(dests, key=cmp_to_key(_cmp_dests)) if sort else dests


def _flag_bits(service: ServiceView) -> int:
    bits = 0
    for flag in service.flags:
        if flag not in _FLAG_BITS:
            raise ValueError(f"unknown scheduler flag {flag!r}")
        bits |= _FLAG_BITS[flag]
    return bits


def _flag_text(service: ServiceView) -> str:
    """print_sched_flags(): names depend on the scheduler, not on how the flags were given."""
    bits = _flag_bits(service)
    names = _FLAG_NAMES.get(service.scheduler, _GENERIC_FLAG_NAMES)
    return ",".join(name for bit, name in enumerate(names) if bits & (1 << bit))


def _mask_text(service: ServiceView) -> str | None:
    """The persistence mask if ipvsadm prints it (persistent and not /32)."""
    mask = _ip(service.netmask)
    return mask if service.persistent_s and mask != _HOST_MASK else None


def _service_name(service: ServiceView) -> str:
    if service.fwmark:
        return f"FWM  {service.fwmark}"
    protocol = _PROTOCOL_NAMES.get(_proto(service.protocol), "?")
    return f"{protocol:<4s} {_ip(service.vip)}:{service.port}"[:33]


def _dest_name(dest: DestView) -> str:
    return f"{_ip(dest.address)}:{dest.port}"[:28]


# -- ipvsadm -L -n and its variants ----------------------------------------------

_TITLE_PLAIN = ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
_REMOTE = "  -> RemoteAddress:Port\n"
_TITLE_STATS = "%-33s %8s %8s %8s %8s %8s\n" % (
    "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes") + _REMOTE
_TITLE_RATE = "%-33s %8s %8s %8s %8s %8s\n" % (
    "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS") + _REMOTE
_TITLE_THRESHOLDS = "%-33s %-10s %-10s %-10s %-10s\n" % (
    "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn") + _REMOTE
_TITLE_PERSISTENT = "%-33s %-9s %-11s %-10s %-10s\n" % (
    "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn") + _REMOTE


def _service_line(service: ServiceView) -> str:
    """The plain (and --thresholds/--persistent-conn) service line, without newline."""
    line = f"{_service_name(service)} {service.scheduler}"
    if _flag_bits(service):
        line += f" ({_flag_text(service)})"
    if service.persistent_s:
        line += f" persistent {service.persistent_s}"
        mask = _mask_text(service)
        if mask:
            line += f" mask {mask}"
        if service.pe:
            line += f" pe {service.pe}"
    if service.ops:
        line += " ops"
    return line


def _listing(services: Iterable[ServiceView], table_size: int, title: str, service_line,
             dest_line, sort: bool, with_version: bool) -> str:
    out = [f"IP Virtual Server version {IPVS_VERSION} (size={table_size})\n"]
    if not with_version:
        out = []
    out.append(title)
    for service in _sorted_services(services, sort):
        out.append(service_line(service) + "\n")
        out += [dest_line(dest) + "\n" for dest in _sorted_dests(service, sort)]
    return "".join(out)


def format_services(services: Iterable[ServiceView], table_size: int, *, sort: bool = True,
                    with_version: bool = True) -> str:
    """`ipvsadm -L -n`; with_version=False gives `ipvsadm -L -n -t vip:port` (no first line)."""
    def dest_line(d: DestView) -> str:
        return "  -> %-28s %-7s %-6d %-10u %-10u" % (_dest_name(d), d.forward, d.weight,
                                                     d.active, d.inactive)
    return _listing(services, table_size, _TITLE_PLAIN, _service_line, dest_line, sort,
                    with_version)


def format_stats(services: Iterable[ServiceView], table_size: int, *, exact: bool = False,
                 sort: bool = True, with_version: bool = True) -> str:
    """`ipvsadm -L -n --stats [--exact]`."""
    def numbers(v: ServiceView | DestView) -> str:
        return "".join(format_largenum(n, exact)
                       for n in (v.conns, v.inpkts, v.outpkts, v.inbytes, v.outbytes))
    return _listing(services, table_size, _TITLE_STATS,
                    lambda s: "%-33s" % _service_name(s) + numbers(s),
                    lambda d: "  -> %-28s" % _dest_name(d) + numbers(d), sort, with_version)


def format_rate(services: Iterable[ServiceView], table_size: int, *, exact: bool = False,
                sort: bool = True, with_version: bool = True) -> str:
    """`ipvsadm -L -n --rate [--exact]`: server CPS/InPPS/OutPPS are always plain `%8llu`."""
    def service_line(s: ServiceView) -> str:
        return "%-33s" % _service_name(s) + "".join(
            format_largenum(n, exact) for n in (s.cps, s.inpps, s.outpps, s.inbps, s.outbps))

    def dest_line(d: DestView) -> str:
        return ("  -> %-28s %8u %8u %8u" % (_dest_name(d), d.cps, d.inpps, d.outpps)
                + format_largenum(d.inbps, exact) + format_largenum(d.outbps, exact))
    return _listing(services, table_size, _TITLE_RATE, service_line, dest_line, sort,
                    with_version)


def format_thresholds(services: Iterable[ServiceView], table_size: int, *, sort: bool = True,
                      with_version: bool = True) -> str:
    """`ipvsadm -L -n --thresholds`."""
    def dest_line(d: DestView) -> str:
        return "  -> %-28s %-10u %-10u %-10u %-10u" % (_dest_name(d), d.u_threshold,
                                                       d.l_threshold, d.active, d.inactive)
    return _listing(services, table_size, _TITLE_THRESHOLDS, _service_line, dest_line, sort,
                    with_version)


def format_persistent(services: Iterable[ServiceView], table_size: int, *, sort: bool = True,
                      with_version: bool = True) -> str:
    """`ipvsadm -L -n --persistent-conn`."""
    def dest_line(d: DestView) -> str:
        return "  -> %-28s %-9u %-11u %-10u %-10u" % (_dest_name(d), d.weight, d.persist,
                                                      d.active, d.inactive)
    return _listing(services, table_size, _TITLE_PERSISTENT, _service_line, dest_line, sort,
                    with_version)


# -- ipvsadm -L -n -c, --timeout, -S -n ----------------------------------------------

def format_connections(conns: Iterable[ConnView], now: float = 0.0) -> str:
    """`ipvsadm -L -n -c`, entries in the order given (the kernel's is hash order).

    The expiry is whole seconds until the timer fires, truncated as /proc does
    ((expires - jiffies) / HZ), shown as mm:ss; an overdue entry shows 00:00.
    With the default now=0, `expires_s` is read as the time remaining.
    """
    out = ["IPVS connection entries\n",
           "pro expire %-11s %-18s %-18s %s\n" % ("state", "source", "virtual", "destination")]
    for c in conns:
        seconds = max(0, int(c.expires_s - now))
        protocol = _PROTOCOL_NAMES.get(_proto(c.protocol), "UNK")
        out.append("%-3s %-6s %-11s %-18s %-18s %s\n" % (
            protocol, "%02d:%02d" % divmod(seconds, 60), c.state, f"{_ip(c.caddr)}:{c.cport}",
            f"{_ip(c.vaddr)}:{c.vport}", f"{_ip(c.daddr)}:{c.dport}"))
    return "".join(out)


def format_timeout(tcp_s: int, tcpfin_s: int, udp_s: int) -> str:
    """`ipvsadm -L --timeout`."""
    return f"Timeout (tcp tcpfin udp): {tcp_s} {tcpfin_s} {udp_s}\n"


def format_save(services: Iterable[ServiceView], *, sort: bool = True) -> str:
    """`ipvsadm -S -n`: rules in `ipvsadm -R` form (thresholds are not saved, as ipvsadm)."""
    out = []
    for s in _sorted_services(services, sort):
        if s.fwmark:
            name = f"-f {s.fwmark}"
        else:
            option = _SAVE_OPTIONS.get(_proto(s.protocol), "--xxx-service")
            name = f"{option} {_ip(s.vip)}:{s.port}"
        line = f"-A {name} -s {s.scheduler}"
        if s.persistent_s:
            line += f" -p {s.persistent_s}"
            mask = _mask_text(s)
            if mask:
                line += f" -M {mask}"
        if s.pe:
            line += f" --pe {s.pe}"
        if s.ops:
            line += " -o"
        if _flag_bits(s):
            line += f" -b {_flag_text(s)}"
        out.append(line + "\n")
        out += [f"-a {name} -r {_ip(d.address)}:{d.port} {_FORWARD_SWITCHES[d.forward]} "
                f"-w {d.weight}\n" for d in _sorted_dests(s, sort)]
    return "".join(out)


# -- from the control socket's JSON ------------------------------------------------

def _from_dict(cls: type, data: dict):
    """Build a view from a dict, ignoring keys the view has no field for."""
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


def services_from_json(services: Iterable[dict]) -> list[ServiceView]:
    """ServiceViews from `snapshot.services()` dicts (lists become tuples)."""
    views = []
    for data in services:
        dests = tuple(_from_dict(DestView, d) for d in data.get("dests", ()))
        data = {**data, "dests": dests, "flags": tuple(data.get("flags", ()))}
        views.append(_from_dict(ServiceView, data))
    return views


def connections_from_json(conns: Iterable[dict]) -> list[ConnView]:
    """ConnViews from `snapshot.connections()` dicts (expires_s relative: use now=0)."""
    return [_from_dict(ConnView, data) for data in conns]
