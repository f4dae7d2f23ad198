"""IPVS's TCP and UDP connection state machines, as arrays.

What it does: holds the kernel's TCP transition tables as one uint8 array
``TRANSITIONS[table, direction, event, state]`` (table 0 = normal, 1 = the
"secure_tcp" defence table), the active-state table, the per-state timeouts, and
a vectorised ``next_state`` that is one gather from those arrays. The Markdown
in the docs is rendered from the same arrays (style rule 4), so the picture
cannot drift from the code.

What it does not do: it keeps no per-connection state, reads no clock and moves
no counters. The engine owns the connection columns: it calls ``next_state``,
re-arms ``expires = now + timeouts[new_state]`` and moves a real server's
active/inactive counters when ``ACTIVE[old_flag] != ACTIVE[new_state]``.

What it mirrors (spec/ipvs.md §3.4-§3.6): ``tcp_states`` / ``tcp_states_dos``,
``tcp_state_idx``, ``set_tcp_state``, ``tcp_timeouts``, ``tcp_state_name_table``
and ``tcp_state_active_table`` in net/netfilter/ipvs/ip_vs_proto_tcp.c; the
single UDP state and its 300 s timeout in ip_vs_proto_udp.c; ``ip_vs_set_timeout``
(``ipvsadm --set``) in ip_vs_ctl.c; the 3 s initial timeout of ip_vs_conn_new.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# --- States: uint8 codes in kernel order (IP_VS_TCP_S_*), UDP appended. -------
NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT = 0, 1, 2, 3, 4, 5
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, SYNACK = 6, 7, 8, 9, 10
UDP = 11
N_TCP_STATES = 11
N_STATES = 12

STATE_NAMES: tuple[str, ...] = (
    "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK", "UDP",
)
"""As ipvsadm -Lnc prints them (tcp_state_name_table; UDP's one state is "UDP")."""

# Two-letter names used by the kernel's table macros (sNO, sES, ...) and the spec.
ABBREV: tuple[str, ...] = ("NONE", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA")

# --- Directions and events ----------------------------------------------------
DIR_INPUT, DIR_OUTPUT, DIR_INPUT_ONLY = 0, 1, 2
DIRECTION_NAMES = ("INPUT", "OUTPUT", "IN-ONLY")
EV_SYN, EV_FIN, EV_ACK, EV_RST = 0, 1, 2, 3
EVENT_NAMES = ("syn", "fin", "ack", "rst")

# TCP header flag bits (RFC 9293 §3.1).
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

INITIAL_TIMEOUT_S = 3
"""A new connection's timeout until its first transition (ip_vs_conn_new: 3*HZ)."""

# --- The tables, written as in ip_vs_proto_tcp.c (rows: syn, fin, ack, rst). ---
#               NONE ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
_NORMAL = {
    "INPUT": (
        "SR   ES  ES  SR  SR  SR  SR  SR  SR  SR  SR",
        "CL   CW  SS  TW  TW  TW  CL  CW  LA  LI  TW",
        "ES   ES  SS  ES  FW  TW  CL  CW  CL  LI  ES",
        "CL   CL  CL  SR  CL  CL  CL  CL  LA  LI  SR"),
    "OUTPUT": (
        "SS   ES  SS  SR  SS  SS  SS  SS  SS  LI  SR",
        "TW   FW  SS  TW  FW  TW  CL  TW  LA  LI  TW",
        "ES   ES  SS  ES  FW  TW  CL  CW  LA  ES  ES",
        "CL   CL  SS  CL  CL  TW  CL  CL  CL  CL  CL"),
    "IN-ONLY": (
        "SR   ES  ES  SR  SR  SR  SR  SR  SR  SR  SR",
        "CL   FW  SS  TW  FW  TW  CL  CW  LA  LI  TW",
        "ES   ES  SS  ES  FW  TW  CL  CW  CL  LI  ES",
        "CL   CL  CL  SR  CL  CL  CL  CL  LA  LI  CL"),
}
# tcp_states_dos: used while the effective secure_tcp level is above 1 (§3.4).
_SECURE = {
    "INPUT": (
        "SR   ES  ES  SR  SR  SR  SR  SR  SR  SR  SA",
        "CL   CW  SS  TW  TW  TW  CL  CW  LA  LI  SA",
        "ES   ES  SS  SR  FW  TW  CL  CW  CL  LI  SA",
        "CL   CL  CL  SR  CL  CL  CL  CL  LA  LI  CL"),
    "OUTPUT": (
        "SS   ES  SS  SA  SS  SS  SS  SS  SS  LI  SA",
        "TW   FW  SS  TW  FW  TW  CL  TW  LA  LI  TW",
        "ES   ES  SS  ES  FW  TW  CL  CW  LA  ES  ES",
        "CL   CL  SS  CL  CL  TW  CL  CL  CL  CL  CL"),
    "IN-ONLY": (
        "SA   ES  ES  SR  SA  SA  SA  SA  SA  SA  SA",
        "CL   FW  SS  TW  FW  TW  CL  CW  LA  LI  TW",
        "ES   ES  SS  ES  FW  TW  CL  CW  CL  LI  ES",
        "CL   CL  CL  SR  CL  CL  CL  CL  LA  LI  CL"),
}


def _build(*tables: dict[str, tuple[str, ...]]) -> NDArray[np.uint8]:
    code = {a: i for i, a in enumerate(ABBREV)}
    out = np.zeros((len(tables), 3, 4, N_TCP_STATES), dtype=np.uint8)
    for t, table in enumerate(tables):
        for d, name in enumerate(DIRECTION_NAMES):
            for e, row in enumerate(table[name]):
                out[t, d, e] = [code[cell] for cell in row.split()]
    out.setflags(write=False)
    return out


TRANSITIONS: NDArray[np.uint8] = _build(_NORMAL, _SECURE)
"""Next state, indexed [table (0 normal, 1 secure), direction, event, current state]."""

ACTIVE: NDArray[np.bool_] = np.zeros(N_STATES, dtype=bool)
ACTIVE[[ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK]] = True  # tcp_state_active_table
ACTIVE.setflags(write=False)
"""Counted in a real server's activeconns; every other state (and UDP, always) is inactive."""

def _event_table() -> NDArray[np.int8]:
    """tcp_state_idx for every flag byte: RST > SYN > FIN > ACK, -1 when none is set."""
    table = np.full(256, -1, dtype=np.int8)
    for flags in range(256):
        for bit, event in ((TH_RST, EV_RST), (TH_SYN, EV_SYN), (TH_FIN, EV_FIN), (TH_ACK, EV_ACK)):
            if flags & bit:
                table[flags] = event
                break
    table.setflags(write=False)
    return table


_EVENT_OF_FLAGS = _event_table()  # one gather per packet instead of four flag tests


def tcp_event(flags: ArrayLike) -> NDArray[np.int8]:
    """TCP flag bytes → event codes (EV_*), -1 where none of R, S, F, A is set."""
    return _EVENT_OF_FLAGS[np.asarray(flags, dtype=np.uint8)]


def next_state(states: ArrayLike, directions: ArrayLike, tcp_flags: ArrayLike,
               secure: bool = False) -> NDArray[np.uint8]:
    """The state after one packet per row, as set_tcp_state computes it.

    ``states`` are current codes, ``directions`` DIR_* (the caller picks
    DIR_INPUT_ONLY while NOOUTPUT is set, never in NAT), ``tcp_flags`` the TCP
    flag byte. A segment with none of R/S/F/A moves to CLOSE (set_tcp_state
    starts from new_state = CLOSE). Rows in the UDP state stay UDP whatever the
    flags. Inputs broadcast against each other.
    """
    states, directions, tcp_flags = np.broadcast_arrays(
        np.asarray(states, dtype=np.uint8), np.asarray(directions, dtype=np.intp),
        np.asarray(tcp_flags, dtype=np.uint8))
    if states.size and int(states.max()) >= N_STATES:
        raise ValueError("state code out of range")
    event = tcp_event(tcp_flags)
    udp = states == UDP
    tcp_state = np.where(udp, NONE, states)
    out = TRANSITIONS[int(bool(secure)), directions, np.maximum(event, 0), tcp_state]
    out = np.where(event < 0, np.uint8(CLOSE), out)
    return np.where(udp, np.uint8(UDP), out).astype(np.uint8, copy=False)


MAX_TIMEOUT_S = (2**31 - 1) // 1000
"""ip_vs_set_timeout rejects values above INT_MAX/HZ; we assume the largest common HZ, 1000."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds a connection lives after its last packet, per state (tcp_timeouts, udp_timeouts)."""

    none_s: float = 2
    """NONE: created but not yet moved by a packet (rarely seen: creation moves it at once)."""
    established_s: float = 900
    """ESTABLISHED; `ipvsadm --set` first value ("tcp")."""
    syn_sent_s: float = 120
    """SYN_SENT: the real server sent a SYN first."""
    syn_recv_s: float = 60
    """SYN_RECV: the client's SYN was forwarded; waiting for the handshake to finish."""
    fin_wait_s: float = 120
    """FIN_WAIT: the server closed first; `ipvsadm --set` second value ("tcpfin")."""
    time_wait_s: float = 120
    """TIME_WAIT: both sides have sent FIN."""
    close_s: float = 10
    """CLOSE: after an RST, or a segment with no S/F/A/R flag."""
    close_wait_s: float = 60
    """CLOSE_WAIT: the client closed first."""
    last_ack_s: float = 30
    """LAST_ACK."""
    listen_s: float = 120
    """LISTEN (ip_vs_tcp_conn_listen; used by the sync daemon, not by NAT packets)."""
    synack_s: float = 120
    """SYNACK: only reachable with the secure table."""
    udp_s: float = 300
    """UDP's one state; every datagram either way re-arms it. `ipvsadm --set` third value."""

    def as_array(self) -> NDArray[np.float64]:
        """float64[12] indexed by state code (TCP states in kernel order, then UDP)."""
        return np.array([getattr(self, f.name) for f in dataclasses.fields(self)], dtype=np.float64)

    def with_ipvsadm_set(self, tcp_s: int, tcpfin_s: int, udp_s: int) -> Timeouts:
        """``ipvsadm --set tcp tcpfin udp``: 0 leaves a value unchanged (ip_vs_set_timeout).

        Only ESTABLISHED, FIN_WAIT and UDP change. Negative values or values above
        MAX_TIMEOUT_S raise ValueError (the kernel answers EINVAL).
        """
        for value in (tcp_s, tcpfin_s, udp_s):
            if value < 0 or value > MAX_TIMEOUT_S:
                raise ValueError(f"timeout {value} out of range 0..{MAX_TIMEOUT_S}")
        changes = {name: v for name, v in (("established_s", tcp_s), ("fin_wait_s", tcpfin_s),
                                           ("udp_s", udp_s)) if v}
        return dataclasses.replace(self, **changes)

    def ipvsadm_timeout(self) -> tuple[float, float, float]:
        """What `ipvsadm --timeout` reports: (tcp, tcpfin, udp) (__ip_vs_get_timeouts)."""
        return (self.established_s, self.fin_wait_s, self.udp_s)


DEFAULT_TIMEOUTS = Timeouts()
TIMEOUTS: NDArray[np.float64] = DEFAULT_TIMEOUTS.as_array()
TIMEOUTS.setflags(write=False)
"""Default timeout per state code, seconds (the kernel's tcp_timeouts + udp_timeouts)."""


def advance(states: ArrayLike, directions: ArrayLike, tcp_flags: ArrayLike, now: float,
            timeouts: NDArray[np.float64] = TIMEOUTS,
            secure: bool = False) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """(new states, new expiry times): next_state, then ``now + timeouts[new]`` (set_tcp_state)."""
    new = next_state(states, directions, tcp_flags, secure)
    return new, now + np.asarray(timeouts, dtype=np.float64)[new]


def _table_markdown(secure: bool) -> list[str]:
    table = TRANSITIONS[int(secure)]
    lines = ["| dir | event | " + " | ".join(ABBREV) + " |", "|---" * (2 + N_TCP_STATES) + "|"]
    for d, dname in enumerate(DIRECTION_NAMES):
        for e, ename in enumerate(EVENT_NAMES):
            differs = secure and bool((table[d, e] != TRANSITIONS[0, d, e]).any())
            label = dname + (" ★" if differs else "")
            cells = " | ".join(ABBREV[s] for s in table[d, e])
            lines.append(f"| {label} | {ename} | {cells} |")
    return lines


def transitions_markdown(secure: bool = False) -> str:
    """One transition table in the spec's layout; ★ marks secure rows differing from normal."""
    return "\n".join(_table_markdown(secure)) + "\n"


def render_markdown(timeouts: Timeouts = DEFAULT_TIMEOUTS) -> str:
    """States, timeouts, activity and both transition tables as Markdown, from the arrays."""
    seconds = timeouts.as_array()
    lines = ["| state | code | abbrev | timeout (s) | active |", "|---|---|---|---|---|"]
    for code, name in enumerate(STATE_NAMES):
        abbrev = ABBREV[code] if code < N_TCP_STATES else "–"
        lines.append(f"| {name} | {code} | {abbrev} | {seconds[code]:g} | "
                     f"{'yes' if ACTIVE[code] else 'no'} |")
    lines += ["", "Normal table (secure_tcp = 0). Columns = current state.", ""]
    lines += _table_markdown(False)
    lines += ["", "Secure table (tcp_states_dos). ★ = rows that differ from the normal table.", ""]
    lines += _table_markdown(True)
    return "\n".join(lines) + "\n"
