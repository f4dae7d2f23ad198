"""Carry out one parsed ipvsadm command on the engine and render what ipvsadm prints.

What it does: -A/-E/-D/-C change services through svcctl, -a/-e/-d change real
servers through destctl, --set changes the engine's timeouts, -Z zeroes the
statistics through the rate estimator, and -L/-l (every variant: -c, --stats,
--rate, --thresholds, --persistent-conn, --tun-info, --exact, --nosort,
--timeout, --daemon, one service with -t/-u/-f) and -S are rendered through
listing.py byte for byte as ipvsadm 1.31 prints them. -R runs the lines of the
command's `stdin` text one by one. Failures carry ipvsadm's text and status:
operation errors are libipvs's ipvs_strerror() messages with status 255 (the -1
process_options returns), a missing service for `-L -t` exits 1.

A fwmark service added with -A has no match rules: ipvsadm cannot express them,
and a TUN carries no netfilter mark, so it receives no packets until the
configuration names the (protocol, address, port) triples that carry its mark;
-A says so on stderr. -E keeps the match rules a service already has.

What it does not do: read the clock, resolve names, or touch the raw counters
(-Z moves the estimator's base, so Prometheus counters stay monotonic).

Mirrors ipvsadm.c process_options(), restore_table(), list_all(), list_service(),
list_conn(), list_timeout(), list_daemon() and the kernel checks behind
ip_vs_add_service / ip_vs_edit_service / ip_vs_add_dest / ip_vs_edit_dest /
ip_vs_del_dest (ESRCH, EEXIST, ENOENT, ERANGE). Pure: runs on the data-path thread.
"""

from __future__ import annotations

from typing import NamedTuple

from userlb import admhelp, destctl, estimator, listing, sched, snapshot, svcctl
from userlb.admparse import AdmCommand, AdmError, parse
from userlb.listing import DestView, ServiceView
from userlb.services import RealServer, VirtualService, ip_to_int

OP_FAILED = 255
"""process_options() returns -1 when the kernel refuses; main() exits with it."""
ERANGE = "Numerical result out of range"


class AdmOutput(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str = ""


def run(engine, argv: list[str], now: float, *, stdin: str | None = None,
        rates: estimator.Estimator | None = None, prog: str = "ipvsadm") -> AdmOutput:
    """`userlb adm ARGV`: parse, then execute; every failure becomes an AdmOutput."""
    try:
        cmd = parse(argv, prog=prog, stdin=stdin)
    except AdmError as exc:
        return AdmOutput(exc.status, "", exc.message)
    return execute(engine, cmd, now, rates)


def execute(engine, cmd: AdmCommand, now: float,
            rates: estimator.Estimator | None = None) -> AdmOutput:
    """Apply or list; `rates` defaults to estimator.for_engine(engine)."""
    est = rates if rates is not None else estimator.for_engine(engine)
    try:
        return _execute(engine, cmd, now, est)
    except AdmError as exc:
        return AdmOutput(exc.status, "", exc.message)


def _execute(engine, cmd: AdmCommand, now: float, est) -> AdmOutput:
    c = cmd.command
    if c == "help":
        return AdmOutput(0, admhelp.usage_text(cmd.prog, sched.available()))
    if c == "version":
        return AdmOutput(0, admhelp.version_text())
    if c == "list":
        return AdmOutput(0, _list(engine, cmd, now, est))
    if c == "save":
        views = [v for _, v in service_views(engine, est.rates(engine))]
        return AdmOutput(0, listing.format_save(views, sort=not cmd.has("nosort")))
    if c == "restore":
        return _restore(engine, cmd, now, est)
    try:
        note = _CHANGES[c](engine, cmd, est)
    except _OpError as exc:
        return AdmOutput(OP_FAILED, "", str(exc) + "\n")
    return AdmOutput(0, "", note or "")


class _OpError(Exception):
    """The kernel said no: ipvs_strerror()'s text; ipvsadm goes on with -R."""


# -- changes --------------------------------------------------------------------------

def _find(engine, cmd: AdmCommand, missing: str) -> int:
    index = svcctl.find_service(engine, cmd.service_key)
    if index < 0:
        raise _OpError(missing)
    return index


def _service_config(cmd: AdmCommand, match=()) -> VirtualService:
    if cmd.scheduler not in sched.available():
        raise _OpError("Scheduler or persistence engine not found")
    if cmd.fwmark:
        where = {"protocol": "tcp", "vip": "0.0.0.0", "port": 0, "match": tuple(match)}
    else:
        where = {"protocol": cmd.protocol, "vip": cmd.vip, "port": cmd.port}
    return VirtualService(scheduler=cmd.scheduler, sched_flags=cmd.sched_flags,
                          persistent_s=cmd.persistent_s, netmask=cmd.netmask,
                          fwmark=cmd.fwmark, **where)


def _add_service(engine, cmd: AdmCommand, est) -> str | None:
    if svcctl.find_service(engine, cmd.service_key) >= 0:
        raise _OpError("Service already exists")
    svcctl.add_service(engine, _service_config(cmd))
    if cmd.fwmark:
        return (f"userlb: fwmark service {cmd.fwmark} has no match rules yet: it gets no packets "
                f"until the configuration names the (protocol, address, port) triples that "
                f"carry mark {cmd.fwmark} (a TUN has no netfilter mark)\n")
    return None


def _edit_service(engine, cmd: AdmCommand, est) -> None:
    index = _find(engine, cmd, "No such service")
    old = engine.services[index].config
    svcctl.edit_service(engine, index, _service_config(cmd, old.match))


def _delete_service(engine, cmd: AdmCommand, est) -> None:
    svcctl.delete_service(engine, _find(engine, cmd, "No such service"))


def _flush(engine, cmd: AdmCommand, est) -> None:
    for index, rt in enumerate(engine.services):
        if rt is not None:
            svcctl.delete_service(engine, index)


def _thresholds_ok(cmd: AdmCommand) -> None:
    if cmd.l_threshold > cmd.u_threshold:          # ip_vs_add_dest/edit_dest: -ERANGE
        raise _OpError(ERANGE)


def _add_server(engine, cmd: AdmCommand, est) -> None:
    index = _find(engine, cmd, "Service not defined")
    _thresholds_ok(cmd)
    rt = engine.services[index]
    if rt.dests.find(ip_to_int(cmd.server), cmd.server_port) >= 0:
        raise _OpError("Destination already exists")
    destctl.add_dest(engine, index, RealServer(cmd.server, cmd.server_port, cmd.weight,
                                               cmd.u_threshold, cmd.l_threshold))


def _edit_server(engine, cmd: AdmCommand, est) -> None:
    index = _find(engine, cmd, "Service not defined")
    _thresholds_ok(cmd)
    if engine.services[index].dests.find(ip_to_int(cmd.server), cmd.server_port) < 0:
        raise _OpError("No such destination")
    engine.edit_dest(index, cmd.server, cmd.server_port, cmd.weight,
                     u_threshold=cmd.u_threshold, l_threshold=cmd.l_threshold)


def _delete_server(engine, cmd: AdmCommand, est) -> None:
    index = _find(engine, cmd, "Service not defined")
    if engine.services[index].dests.find(ip_to_int(cmd.server), cmd.server_port) < 0:
        raise _OpError("No such destination")
    destctl.remove_dest(engine, index, cmd.server, cmd.server_port)


def _set_timeouts(engine, cmd: AdmCommand, est) -> None:
    try:
        engine.timeouts = engine.timeouts.with_ipvsadm_set(*cmd.timeouts)
    except ValueError:
        raise _OpError("Invalid operation.  Possibly wrong module version, address not "
                       "unicast, ...") from None
    engine.timeout_of = engine.timeouts.as_array()


def _zero(engine, cmd: AdmCommand, est) -> None:
    if cmd.fwmark or cmd.vip != "0.0.0.0" or cmd.port:
        est.zero(engine, _find(engine, cmd, "No such service"))
    else:
        est.zero(engine)


_CHANGES = {"add-service": _add_service, "edit-service": _edit_service,
            "delete-service": _delete_service, "flush": _flush, "add-server": _add_server,
            "edit-server": _edit_server, "delete-server": _delete_server,
            "set": _set_timeouts, "zero": _zero}


# -- -R ---------------------------------------------------------------------------------

def _restore(engine, cmd: AdmCommand, now: float, est) -> AdmOutput:
    """restore_table(): one invocation per line; an option error stops the rest."""
    out, err, status = [], [], 0
    for line in (cmd.stdin or "").splitlines():
        words = [w for w in line.split() if w != "ipvsadm"]
        if not words:
            continue
        try:
            result = _execute(engine, parse(words, prog=cmd.prog, reading_stdin=True), now, est)
        except AdmError as exc:
            return AdmOutput(exc.status, "".join(out), "".join(err) + exc.message)
        out.append(result.stdout)
        err.append(result.stderr)
        status = result.exit_code
    return AdmOutput(status, "".join(out), "".join(err))


# -- listings ---------------------------------------------------------------------------

def service_views(engine, report: estimator.Report) -> list[tuple[int, ServiceView]]:
    """(engine index, ServiceView) of every live service, servers in scan order."""
    views = []
    for index, rt in enumerate(engine.services):
        if rt is None:
            continue
        c, d = rt.config, rt.dests
        dests = tuple(DestView(
            int(d.addr[k]), int(d.port[k]), weight=int(d.weight[k]),
            active=int(d.activeconns[k]), inactive=int(d.inactconns[k]),
            persist=int(d.persistconns[k]), u_threshold=int(d.u_threshold[k]),
            l_threshold=int(d.l_threshold[k]), **vars(report.dest(d.uid[k])))
            for k in range(len(d)))
        where = ({"protocol": "tcp", "vip": 0, "port": 0} if c.fwmark else
                 {"protocol": c.protocol, "vip": c.vip, "port": c.port})
        views.append((index, ServiceView(
            fwmark=c.fwmark, scheduler=c.scheduler, flags=tuple(c.sched_flags),
            persistent_s=c.persistent_s, netmask=c.netmask, dests=dests,
            **vars(report.service(index)), **where)))
    return views


def _list(engine, cmd: AdmCommand, now: float, est) -> str:
    if cmd.has("connection"):
        return _connections(engine, now, cmd.has("persistent-conn"))
    if cmd.has("timeout"):
        return listing.format_timeout(*(int(v) for v in engine.timeouts.ipvsadm_timeout()))
    if cmd.has("daemon"):
        return ""                        # no IPVS sync daemon runs: list_daemon prints nothing
    est.tick(engine, now)                # the 2-s steps due, in case the timer is late
    views = service_views(engine, est.rates(engine))
    size = engine.table.capacity
    if cmd.has("service-address"):
        index = svcctl.find_service(engine, cmd.service_key)
        one = [v for i, v in views if i == index]
        if not one:
            raise AdmError(1, "No such service")
        return _render(one, size, cmd, with_version=False)
    return _render([v for _, v in views], size, cmd, with_version=True)


def _render(views: list[ServiceView], size: int, cmd: AdmCommand, with_version: bool) -> str:
    """print_title() precedence: --stats, --rate, --thresholds, --persistent-conn, --tun-info."""
    kw = {"sort": not cmd.has("nosort"), "with_version": with_version}
    if cmd.has("stats"):
        return listing.format_stats(views, size, exact=cmd.has("exact"), **kw)
    if cmd.has("rate"):
        return listing.format_rate(views, size, exact=cmd.has("exact"), **kw)
    if cmd.has("thresholds"):
        return listing.format_thresholds(views, size, **kw)
    if cmd.has("persistent-conn"):
        return listing.format_persistent(views, size, **kw)
    if cmd.has("tun-info"):
        return _format_tun_info(views, size, **kw)
    return listing.format_services(views, size, **kw)


_TITLE_TUN_INFO = ("Prot LocalAddress:Port Scheduler Flags\n"
                   "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
                   "InActConn\n")


def _format_tun_info(views, size: int, *, sort: bool, with_version: bool) -> str:
    """`-L --tun-info`: NAT servers have no tunnel, so TunnelInfo is n/a (fwd_tun_info)."""
    def dest_line(d: DestView) -> str:
        return "  -> %-28s %-7s %-13s %-6d %-10u %-10u" % (
            listing._dest_name(d), d.forward, "n/a", d.weight, d.active, d.inactive)
    return listing._listing(views, size, _TITLE_TUN_INFO, listing._service_line, dest_line, sort,
                            with_version)


def _connections(engine, now: float, persistent_conn: bool) -> str:
    """list_conn(): entries in table order; --persistent-conn widens the title only (no
    entry has persistence-engine data, so print_conn keeps the short row)."""
    conns = listing.connections_from_json(snapshot.connections(engine, now))
    text = listing.format_connections(conns)
    if not persistent_conn:
        return text
    head, title, rest = text.split("\n", 2)
    title = "pro expire %-11s %-18s %-18s %-18s %-16s %s" % (
        "state", "source", "virtual", "destination", "pe name", "pe_data")
    return f"{head}\n{title}\n{rest}"
