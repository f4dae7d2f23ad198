"""ipvsadm 1.31's command line, as userlb adm reads it: every command and option,
ipvsadm's error text and exit status, the quirks kept and the limits added."""

from __future__ import annotations

import pytest

from userlb.admparse import AdmCommand, AdmError, parse
from userlb.admpopt import inet_aton, string_to_number, strtol, tokenize

VS = ["-t", "198.18.0.1:80"]


def err(argv, **kw) -> tuple[int, str]:
    with pytest.raises(AdmError) as info:
        parse(argv, **kw)
    return info.value.status, info.value.message


# -- commands ----------------------------------------------------------------------

@pytest.mark.parametrize("argv, command", [
    (["-A", *VS], "add-service"), (["--add-service", *VS], "add-service"),
    (["-E", *VS], "edit-service"), (["--edit-service", *VS], "edit-service"),
    (["-D", *VS], "delete-service"), (["--delete-service", *VS], "delete-service"),
    (["-C"], "flush"), (["--clear"], "flush"),
    (["-L"], "list"), (["-l"], "list"), (["--list"], "list"),
    (["-a", *VS, "-r", "198.18.1.1"], "add-server"),
    (["--add-server", *VS, "-r", "198.18.1.1"], "add-server"),
    (["-e", *VS, "-r", "198.18.1.1"], "edit-server"),
    (["--edit-server", *VS, "-r", "198.18.1.1"], "edit-server"),
    (["-d", *VS, "-r", "198.18.1.1"], "delete-server"),
    (["--delete-server", *VS, "-r", "198.18.1.1"], "delete-server"),
    (["-Z"], "zero"), (["--zero"], "zero"), (["-Z", *VS], "zero"),
    (["--set", "1", "2", "3"], "set"), (["-S"], "save"), (["--save", "-n"], "save"),
    (["-R"], "restore"), (["--restore"], "restore"),
    (["-h"], "help"), (["--help"], "help"), (["-v"], "version"), (["--version"], "version"),
    ([], "list"),
])
def test_each_command(argv, command):
    assert parse(argv).command == command


def test_no_arguments_is_list_all():
    assert parse([]) == AdmCommand("list")


def test_help_and_version_stop_at_once():
    assert parse(["-h", "--bogus"]).command == "help"
    assert parse(["-v", "-Z"]).command == "version"


# -- services and servers ----------------------------------------------------------------

def test_add_service_defaults():
    c = parse(["-A", "-t", "198.18.0.1:80"])
    assert (c.protocol, c.vip, c.port, c.fwmark) == ("tcp", "198.18.0.1", 80, 0)
    assert (c.scheduler, c.persistent_s, c.netmask, c.sched_flags) == (
        "wlc", 0, "255.255.255.255", ())
    assert c.service_key == (6, 0xC6120001, 80)


def test_service_forms():
    assert parse(["-A", "-u", "198.18.0.1:53"]).service_key == (17, 0xC6120001, 53)
    assert parse(["-A", "--udp-service", "198.18.0.1:53"]).protocol == "udp"
    assert parse(["-A", "--tcp-service=198.18.0.1:443"]).port == 443
    assert parse(["-A", "-t198.18.0.1:80"]).port == 80                 # attached argument
    f = parse(["-A", "-f", "7", "-s", "rr"])
    assert (f.fwmark, f.protocol, f.service_key) == (7, "", (0, 7, 0))
    assert parse(["-A", "--fwmark-service", "4294967295"]).fwmark == 2**32 - 1
    assert parse(["-A", "-t", "10.1:80"]).vip == "10.0.0.1"             # inet_aton forms
    assert parse(["-A", "-t", "0xc6120001:80"]).vip == "198.18.0.1"


def test_persistence_and_mask():
    assert parse(["-A", *VS, "-p"]).persistent_s == 360                  # man page says 300
    assert parse(["-A", *VS, "-p", "60"]).persistent_s == 60
    assert parse(["-A", *VS, "-p60"]).persistent_s == 60
    assert parse(["-A", *VS, "--persistent=60"]).persistent_s == 60
    assert parse(["-A", *VS, "-p", "-s", "rr"]).persistent_s == 360      # -s is not its value
    c = parse(["-A", "-t", "198.18.0.1:0", "-p", "600", "-M", "255.255.255.0"])
    assert (c.port, c.persistent_s, c.netmask) == (0, 600, "255.255.255.0")
    assert parse(["-A", *VS, "-p", str(86400 * 31)]).persistent_s == 2678400


def test_scheduler_flags_named_by_scheduler():
    c = parse(["-A", *VS, "-s", "sh", "-b", "sh-fallback,sh-port"])
    assert c.sched_flags == ("sh-fallback", "sh-port")
    assert parse(["-A", *VS, "-s", "sh", "-b", "flag-1"]).sched_flags == ("sh-fallback",)
    assert parse(["-A", *VS, "-s", "mh", "-b", "mh-port"]).sched_flags == ("mh-port",)
    assert parse(["-A", *VS, "-b", "flag-2,flag-3"]).sched_flags == ("flag-2", "flag-3")
    assert parse(["-A", *VS, "-b", "sh-port", "-s", "sh"]).sched_flags == ("sh-port",)
    assert parse(["-A", *VS, "-s", "sh", "-b", ""]).sched_flags == ()


def test_real_server_options():
    c = parse(["-a", *VS, "-r", "198.18.1.1:8080", "-m", "-w", "3", "-x", "100", "-y", "50"])
    assert (c.server, c.server_port, c.forward, c.weight) == ("198.18.1.1", 8080, "masq", 3)
    assert (c.u_threshold, c.l_threshold) == (100, 50)
    long = parse(["--add-server", "--tcp-service", "198.18.0.1:80", "--real-server",
                  "198.18.1.1:8080", "--masquerading", "--weight", "0", "--u-threshold=7",
                  "--l-threshold", "3"])
    assert (long.weight, long.u_threshold, long.l_threshold) == (0, 7, 3)
    assert parse(["-a", *VS, "-r", "198.18.1.1:8080", "-mw5"]).weight == 5   # cluster + arg


def test_real_server_port_defaults_to_service_port_seen_so_far():
    assert parse(["-a", *VS, "-r", "198.18.1.1", "-m"]).server_port == 80
    assert parse(["-a", "-r", "198.18.1.1", *VS, "-m"]).server_port == 0     # ipvsadm quirk


def test_edit_replaces_unspecified_fields_with_defaults():
    e = parse(["-E", *VS])                              # §7 point 9
    assert (e.scheduler, e.persistent_s, e.netmask, e.sched_flags) == (
        "wlc", 0, "255.255.255.255", ())
    s = parse(["-e", *VS, "-r", "198.18.1.1:8080"])
    assert (s.weight, s.u_threshold, s.l_threshold, s.forward) == (1, 0, 0, "masq")


def test_list_options():
    c = parse(["-L", "-n", "--stats", "--exact", "--nosort", "--sort"])
    assert c.options == {"numeric", "stats", "exact", "nosort"}
    assert parse(["-Ln"]).options == {"numeric"}
    assert parse(["-lnc"]).options == {"numeric", "connection"}
    for opt in ("--rate", "--thresholds", "--persistent-conn", "--tun-info", "--timeout",
                "--daemon"):
        assert parse(["-L", opt]).has(opt[2:])
    assert parse(["-L", "-X"]).has("exact")
    c = parse(["-L", "-n", "-t", "198.18.0.1:80"])
    assert c.has("service-address") and c.port == 80
    assert parse(["-L", "-c", "--persistent-conn"]).has("persistent-conn")


def test_set_takes_three_leftover_values():
    assert parse(["--set", "900", "120", "300"]).timeouts == (900, 120, 300)
    assert parse(["--set", "0", "0", "30"]).timeouts == (0, 0, 30)


def test_restore_carries_its_input():
    assert parse(["-R"], stdin="-A -t 198.18.0.1:80\n").stdin == "-A -t 198.18.0.1:80\n"
    assert parse(["-L"], stdin="ignored").stdin is None


def test_resolvers_stand_in_for_name_lookups():
    c = parse(["-A", "-t", "www:http"], resolve_host=lambda n: "198.18.0.9",
              resolve_port=lambda n, p: 80 if (n, p) == ("http", "tcp") else None)
    assert (c.vip, c.port) == ("198.18.0.9", 80)
    assert err(["-A", "-t", "www:80"]) == (2, "illegal virtual server address[:port] specified\n")


# -- ipvsadm's errors ------------------------------------------------------------------------

TRY = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"


@pytest.mark.parametrize("argv, status, message", [
    (["-t", "198.18.0.1:80", "-A"], 255, TRY),                  # the command must come first
    (["--bogus"], 255, TRY),
    (["198.18.0.1"], 255, TRY),
    (["-A", "-L"], 2, "invalid option `-L'\n"),
    (["-L", "-h"], 2, "invalid option `-h'\n"),
    (["-A", "--bogus"], 255, "--bogus: unknown option\n"),
    (["-A", *VS, "-q"], 255, "-q: unknown option\n"),
    (["-A", *VS, "-s"], 255, "-s: missing argument\n"),
    (["-L", "--stats=1"], 255, "--stats=1: option does not take an argument\n"),
    (["-A", "-t", "198.18.0.1"], 2, "Zero port specified for non-persistent service\n"),
    (["-A", "-t", "198.18.0.1:"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "80"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "198.18.0.1:65536"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "198.18.0.256:80"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-f", "0"], 2, "invalid fwmark value `0' specified\n"),
    (["-A", "-f", "7x"], 2, "invalid fwmark value `7x' specified\n"),
    (["-A", *VS, "-p", "0"], 2, "invalid timeout value `0' specified\n"),
    (["-A", *VS, "-p", "2678401"], 2, "invalid timeout value `2678401' specified\n"),
    (["-A", *VS, "-M", "bogus"], 2, "illegal virtual server persistent mask specified\n"),
    (["-A", *VS, "-s", "rr", "-b", "sh-port"], 2, "incompatible scheduler flag `sh-port'\n"),
    (["-E", *VS, "-b", "sh-port"], 2, "incompatible scheduler flag `sh-port'\n"),
    (["-A", *VS, "-b", "bogus"], 2, "invalid scheduler flag `bogus'\n"),
    (["-A", *VS, "-b", ","], 2, "invalid scheduler flag `'\n"),
    (["-A", *VS, "-t", "198.18.0.2:80"], 2, "multiple 'service-address' options specified\n"),
    (["-A", *VS, "-f", "7"], 2, "multiple 'service-address' options specified\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-m", "-m"], 2,
     "multiple 'forwarding-method' options specified\n"),
    (["-A", "-s", "rr"], 2, "You need to supply the 'service-address' option for the "
                            "'add-service' command\n"),
    (["-a", *VS], 2, "You need to supply the 'real-server' option for the 'add-server' "
                     "command\n"),
    (["-A", *VS, "-w", "2"], 2, "Illegal 'weight' option with the 'add-service' command\n"),
    (["-D", *VS, "-s", "rr"], 2, "Illegal 'scheduler' option with the 'delete-service' "
                                 "command\n"),
    (["-d", *VS, "-r", "198.18.1.1", "-w", "1"], 2,
     "Illegal 'weight' option with the 'delete-server' command\n"),
    (["-C", "-n"], 2, "Illegal 'numeric' option with the 'flush' command\n"),
    (["-S", "--stats"], 2, "Illegal 'stats' option with the 'save' command\n"),
    (["-R", "-n"], 2, "Illegal 'numeric' option with the 'restore' command\n"),
    (["-Z", "-n"], 2, "Illegal 'numeric' option with the 'zero' command\n"),
    (["-L", "-c", *VS], 2, "The option 'service-address' conflicts with the 'connection' "
                           "option in the 'list' command\n"),
    (["-L", "-c", "--timeout"], 2, "The option 'timeout' conflicts with the 'connection' "
                                   "option in the 'list' command\n"),
    (["-L", "-c", "--stats"], 2, "options conflicts in the list command\n"),
    (["-L", "--timeout", "--persistent-conn"], 2, "options conflicts in the list command\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-w", "65536"], 2, "illegal weight specified\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-w", "-1"], 2, "illegal weight specified\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-x", "y"], 2, "illegal u_threshold specified\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-y", "1.5"], 2, "illegal l_threshold specified\n"),
    (["-a", *VS, "-r", "198.18.1.1:x"], 2, "illegal real server address[:port] specified\n"),
    (["--set", "1", "2"], 2, "--set option requires 3 timeout values\n"),
    (["--set", "1", "2", "x"], 2, "invalid timeout value `x' specified\n"),
    (["--set", "1", "2", str(86400 * 31 + 1)], 2, "invalid timeout value `2678401' specified\n"),
    (["--set", "1", "2", "3", "4"], 2, "unexpected argument 4\n"),
    (["-L", "extra"], 2, "unexpected argument extra\n"),
    (["-A", *VS, "-6"], 2, "-6 used before -f\n\n"),
    (["--start-daemon", "other"], 2, "illegal start-daemon parameter specified\n"),
    (["--stop-daemon", "other"], 2, "illegal start_daemon specified\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-m", "--tun-type", "gue"], 2,
     "Tunnel options conflict with forward method\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-i", "--tun-port", "5"], 2,
     "Illegal 'tun-port' option with the 'ipip' tunnel type\n"),
    (["-a", *VS, "-r", "198.18.1.1", "-i", "--tun-type", "gue"], 2,
     "You need to supply the 'tun-port' option for the 'gue' tunnel type\n"),
    (["-a", *VS, "-r", "198.18.1.1", "--tun-type", "bogus"], 2,
     "illegal tunnel type specified\n"),
])
def test_ipvsadm_errors(argv, status, message):
    assert err(argv) == (status, message)


def test_first_error_wins_in_order():
    assert err(["-A", "-t", "bad", "--bogus"])[1].startswith("illegal virtual server")
    assert err(["-A", "--bogus", "-t", "bad"]) == (255, "--bogus: unknown option\n")


def test_program_name_in_try_help():
    assert err(["-Q"], prog="userlb adm") == (
        255, "Try `userlb adm -h' or 'userlb adm --help' for more information.\n")


def test_restore_inside_restore_is_refused():
    assert err(["-R"], reading_stdin=True) == (255, TRY)


# -- userlb's limits -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["-a", *VS, "-r", "198.18.1.1", "-g"], "NAT (-m) only"),
    (["-a", *VS, "-r", "198.18.1.1", "--gatewaying"], "NAT (-m) only"),
    (["-e", *VS, "-r", "198.18.1.1", "-i"], "NAT (-m) only"),
    (["-A", "-t", "[2001:db8::1]:80"], "IPv4 only"),
    (["-A", "-f", "7", "-6"], "IPv4 only"),
    (["-A", "--sctp-service", "198.18.0.1:80"], "TCP and UDP"),
    (["-A", "-u", "198.18.0.1:53", "-o"], "one-packet"),
    (["-A", *VS, "-p", "--pe", "sip"], "persistence engines"),
    (["--start-daemon", "master"], "connection sync"),
])
def test_userlb_limits_are_clear_errors(argv, fragment):
    status, message = err(argv)
    assert status == 2 and fragment in message


def test_ops_rule_checked_before_the_userlb_limit():
    assert err(["-A", *VS, "-o"]) == (2, "One-Packet Scheduling is only for UDP virtual "
                                         "services\n")


def test_omitted_forwarding_is_nat_not_direct_routing():
    c = parse(["-a", *VS, "-r", "198.18.1.1:8080"])     # ipvsadm: -g, port forced to 80
    assert (c.forward, c.server_port) == ("masq", 8080)


# -- popt and C helpers ---------------------------------------------------------------------

def test_tokenize_rules():
    kinds = [(i.kind, i.tag, i.arg) for i in tokenize(["-Ln", "--", "-x", "-", "--set"])]
    assert kinds == [("option", "L", None), ("option", "n", None), ("leftover", "", "-x"),
                     ("leftover", "", "-"), ("leftover", "", "--set")]
    assert [(i.tag, i.arg) for i in tokenize(["-s", "-rr"])] == [("s", "-rr")]   # required
    assert [(i.tag, i.arg) for i in tokenize(["-p", "-n"])] == [("p", None), ("n", None)]
    assert tokenize(["-Lq", "-n"])[-1].kind == "error"


def test_c_number_readers():
    assert strtol(" +80") == 80 and strtol("8_0") is None and strtol("80 ") is None
    assert string_to_number("65535", 0, 65535) == 65535
    assert string_to_number("65536", 0, 65535) == -1
    assert inet_aton("198.18.0.1") == 0xC6120001
    assert inet_aton("10.1") == 0x0A000001 and inet_aton("127.1.2") == 0x7F010002
    assert inet_aton("0x7f.1") == 0x7F000001 and inet_aton("010.0.0.1") == 0x08000001
    assert inet_aton("09.0.0.1") is None and inet_aton("1.2.3.256") is None
    assert inet_aton("1.2.3.4 junk") == 0x01020304 and inet_aton("") is None
    assert inet_aton("1.2.3.4.5") is None and inet_aton("a.b.c.d") is None
