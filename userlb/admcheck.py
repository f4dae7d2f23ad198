"""ipvsadm's validity rules for one parsed command, and userlb's own limits.

What it does: generic_opt_check() over the commands-versus-options matrix
(commands_v_options), the per-command checks of process_options() (zero port,
one-packet scheduling, list option conflicts, forwarding and tunnel options with
tunnel_opt_check()), each failing with ipvsadm's message and exit status; then
what userlb refuses (forwarding other than NAT, IPv6, SCTP, -o, --pe, the sync
daemon), each with a message naming the limit. What it does not do: read the
command line (admparse.py). Pure.

Mirrors ipvsadm.c generic_opt_check(), tunnel_opt_check(), process_options().
"""

from __future__ import annotations

NAT_ONLY = ("userlb supports NAT (-m) only: -g (direct routing) and -i (tunnelling) are not "
            "available")
TUN_TYPES = ("ipip", "gue", "gre")


class AdmError(Exception):
    """ipvsadm stopped: `message` is its stderr text, `status` its exit status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message + "\n"         # fail() adds the newline


# cmdnames[] order = rows of the matrix
CMD_NAMES = ("add-service", "edit-service", "delete-service", "flush", "list", "add-server",
             "delete-server", "edit-server", "set", "start-daemon", "stop-daemon", "restore",
             "save", "zero")
OPT_NAMES = ("numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
             "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
             "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
             "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
             "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
             "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
# commands_v_options: '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional
MATRIX = (
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    " 11xxxxxxxxx11       xxxxxxx xxxxx",
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
)
_TUN_OPTS = (30, 31, 32, 33)
_TUN_MATRIX = ("xxxx", "+111", "x11x")      # tunnel_types_v_options


def check(e) -> None:
    """generic_opt_check() and the per-command checks of process_options()."""
    row = MATRIX[CMD_NAMES.index(e.cmd)]
    count, last = 0, 0
    for j, rule in enumerate(row):
        if j not in e.options:
            if rule == "+":
                raise AdmError(2, f"You need to supply the '{OPT_NAMES[j]}' option for the "
                                  f"'{e.cmd}' command")
        elif rule == "x":
            raise AdmError(2, f"Illegal '{OPT_NAMES[j]}' option with the '{e.cmd}' command")
        elif rule == "1":
            count += 1
            if count > 1:
                raise AdmError(2, f"The option '{OPT_NAMES[j]}' conflicts with the "
                                  f"'{OPT_NAMES[last]}' option in the '{e.cmd}' command")
            last = j
    if e.cmd in ("add-service", "edit-service"):
        if not e.fwmark and not e.port and not e.persistent:
            raise AdmError(2, "Zero port specified for non-persistent service")
        if e.ops and not e.fwmark and e.protocol != "udp":
            raise AdmError(2, "One-Packet Scheduling is only for UDP virtual services")
    if e.cmd in ("add-server", "edit-server"):
        _check_server(e)
    if e.cmd == "list":
        given = set(e.options)
        if (given & {1, 12, 13} and given & {14, 15, 16}) or (given & {12, 13} and 17 in given):
            raise AdmError(2, "options conflicts in the list command")


def _check_server(e) -> None:
    forward = e.forward or "route"                     # ipvsadm's default: direct routing
    if e.dest_af != e.af and forward != "tunnel":
        raise AdmError(2, "Different address family is allowed only for tunneling servers")
    if set(e.options) & {29, 30, 31, 32, 33} and forward != "tunnel":
        raise AdmError(2, "Tunnel options conflict with forward method")
    if forward != "tunnel":
        return
    count, last = 0, 0
    for rule, k in zip(_TUN_MATRIX[e.tun_type], _TUN_OPTS):
        name = TUN_TYPES[e.tun_type]
        if k not in e.options:
            if rule == "+":
                raise AdmError(2, f"You need to supply the '{OPT_NAMES[k]}' option for the "
                                  f"'{name}' tunnel type")
        elif rule == "x":
            raise AdmError(2, f"Illegal '{OPT_NAMES[k]}' option with the '{name}' tunnel type")
        elif rule == "1":
            count += 1
            if count > 1:
                raise AdmError(2, f"The option '{OPT_NAMES[k]}' conflicts with the "
                                  f"'{OPT_NAMES[last]}' option in the '{name}' tunnel type")
            last = k


def userlb_limits(e) -> None:
    """What userlb does not do, refused after ipvsadm's own checks passed."""
    if e.cmd in ("start-daemon", "stop-daemon"):
        raise AdmError(2, "userlb: connection sync is set up in the userlb configuration, "
                          "not with --start-daemon/--stop-daemon")
    if e.forward in ("route", "tunnel"):
        raise AdmError(2, NAT_ONLY)
    if e.af == 6 or e.dest_af == 6:
        raise AdmError(2, "userlb supports IPv4 only")
    if e.protocol == "sctp" and not e.fwmark:
        raise AdmError(2, "userlb supports TCP and UDP services only")
    if e.ops:
        raise AdmError(2, "userlb does not implement one-packet scheduling (-o)")
    if e.pe:
        raise AdmError(2, "userlb has no persistence engines (--pe)")
