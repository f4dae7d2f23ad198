"""lvscf: Piranha lvs.cf → Config + nanny health checks + pulse HA settings.

The spec's sample (ha-health-config.md §1.6) parses to the expected model; a corpus of broken
files gives Piranha's messages as `path:line: message`; CRLF and lone-CR files read like LF
ones; nanny's check rules; ha_config() for both routers; examples/lvs.cf loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from userlb import lvscf
from userlb.config import ConfigError, RouterConfig, TimeoutConfig
from userlb.hasettings import (PULSE_GARP, FloatingAddress, HaSettings, HeartbeatSettings,
                               SyncDaemon, ha_config)
from userlb.ha.config import Protocol
from userlb.health.presets import nanny_knobs
from userlb.health.spec import ExternalCheck, SendExpectCheck, ServiceHealth, TcpCheck
from userlb.lvscfparse import integer, tokenize
from userlb.services import RealServer, VirtualService

EXAMPLES = Path(__file__).parents[2] / "examples"

SAMPLE = r"""serial_no = 7
service = lvs
primary = 198.18.1.2
backup = 198.18.1.3
backup_active = 1
heartbeat = 1
heartbeat_port = 539
keepalive = 2
deadtime = 6
network = nat
nat_router = 198.19.1.254 eth1:1
nat_nmask = 255.255.255.0
monitor_links = 0
hard_shutdown = 1
syncdaemon = 1
syncd_iface = eth1
syncd_id = 51
debug_level = NONE

virtual web {
     active = 1
     address = 198.18.1.100 eth0:1
     vip_nmask = 255.255.255.0
     port = 80
     protocol = tcp
     scheduler = wlc
     persistent = 300
     pmask = 255.255.255.0
     send = "GET /healthz HTTP/1.0\r\n\r\n"
     expect = "HTTP/1.[01] 200"
     use_regex = 1
     load_monitor = none
     timeout = 6
     reentry = 30
     quiesce_server = 1

     server rs1 {
         address = 198.19.1.11
         active = 1
         weight = 2
     }
     server rs2 {
         address = 198.19.1.12
         active = 1
         weight = 1
     }
}

virtual dns {
     active = 1
     address = 198.18.1.101 eth0:2
     port = 53
     protocol = udp
     scheduler = rr
     send_program = "/usr/local/bin/check_dns %h"
     expect = "OK"
     timeout = 5
     reentry = 15
     server ns1 {
         address = 198.19.1.21
         active = 1
     }
}
"""

WEB = VirtualService("tcp", "198.18.1.100", 80, "wlc",
                     (RealServer("198.19.1.11", 80, 2), RealServer("198.19.1.12", 80, 1)),
                     (), 300, "255.255.255.0")
DNS = VirtualService("udp", "198.18.1.101", 53, "rr", (RealServer("198.19.1.21", 53, 1),))
WEB_CHECK = SendExpectCheck(send="GET /healthz HTTP/1.0\r\n\r\n", expect="HTTP/1.[01] 200",
                            regex=True, **nanny_knobs(SendExpectCheck, timeout_s=6, reentry_s=30))
DNS_CHECK = ExternalCheck(program="/usr/local/bin/check_dns", args=("%h",),
                          **nanny_knobs(ExternalCheck, timeout_s=5, reentry_s=15))
NAT_ROUTER = FloatingAddress("198.19.1.254", 24, "eth1", "eth1:1")
SAMPLE_HA = HaSettings(
    "heartbeat",
    (FloatingAddress("198.18.1.100", 24, "eth0", "eth0:1"),
     FloatingAddress("198.18.1.101", 32, "eth0", "eth0:2"), NAT_ROUTER),
    NAT_ROUTER,
    HeartbeatSettings("198.18.1.2", "198.18.1.3", None, None, True, 539, 2.0, 6.0, False),
    sync_daemon=SyncDaemon("eth1", 51), garp=PULSE_GARP)

MINIMAL = """\
primary = 198.18.1.2
virtual web {
    active = 1
    address = 198.18.1.100 eth0:1
    port = 8080
    server rs1 {
        address = 198.19.1.11
        active = 1
    }
}
"""


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        lvscf.loads(text, "bad.cf")
    return [str(issue) for issue in info.value.issues]


def edit(old: str, new: str, text: str = MINIMAL) -> str:
    assert old in text
    return text.replace(old, new, 1)


# -- the spec's sample --------------------------------------------------------------------------

def test_spec_sample_services_router_timeouts():
    config, _ = lvscf.loads(SAMPLE, "lvs.cf")
    assert config.services == (WEB, DNS)
    assert config.router == RouterConfig(client_interface="eth0", server_interface="eth1")
    assert config.timeouts == TimeoutConfig()


def test_spec_sample_health_follows_nanny():
    config, _ = lvscf.loads(SAMPLE, "lvs.cf")
    assert config.health == (
        ServiceHealth(service=WEB, checks=((WEB_CHECK,), (WEB_CHECK,)), on_failure="quiesce"),
        ServiceHealth(service=DNS, checks=((DNS_CHECK,),), on_failure="remove"))
    assert (WEB_CHECK.fall, WEB_CHECK.rise, WEB_CHECK.interval_s) == (1, 5, 6)  # reentry // timeout


def test_spec_sample_ha_and_warnings():
    config, warnings = lvscf.loads(SAMPLE, "lvs.cf")
    assert config.ha == SAMPLE_HA
    line = line_of(SAMPLE, 'expect = "OK"')
    assert [str(w) for w in warnings] == [
        f"lvs.cf:{line}: warning: expect with send_program: "
        "userlb judges the program by its exit status only"]


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_crlf_and_cr_files_read_like_lf(eol):
    assert lvscf.loads(SAMPLE.replace("\n", eol), "x") == lvscf.loads(SAMPLE, "x")


def test_crlf_error_lines_are_counted_once_per_line():
    text = edit("    port = 8080\n", "    port = 8080 # web\n").replace("\n", "\r\n")
    assert errors(text) == ["bad.cf:5: port: unexpected arguments (lvs.cf has no trailing comments)"]


# -- broken files ---------------------------------------------------------------------------------

CORPUS = [
    ("trailing comment", edit("port = 8080", "port = 8080 # web"),
     ["bad.cf:5: port: unexpected arguments (lvs.cf has no trailing comments)"]),
    ("one-value address", edit("198.18.1.100 eth0:1", "198.18.1.100"),
     ["bad.cf:4: address: missing arguments (expected 2 values)"]),
    ("no equal sign", "keepalive 2\n" + MINIMAL,
     ["bad.cf:1: keepalive: equal (=) expected after command"]),
    ("unknown global key", "deadtim = 5\n" + MINIMAL,
     ["bad.cf:1: unknown command 'deadtim' in global section (did you mean 'deadtime'?)"]),
    ("unknown server key", edit("active = 1\n    }", "wieght = 2\n        active = 1\n    }"),
     ["bad.cf:8: unknown command 'wieght' in server block (did you mean 'weight'?)"]),
    ("unterminated quote", edit("    port = 8080\n", '    port = 8080\n    send = "GET /\n'),
     ["bad.cf:6: quotation mismatch"]),
    ("integer expected", edit("port = 8080", "port = 80x"),
     ["bad.cf:5: port: invalid argument: '80x' is neither a port number nor a known "
      "service name"]),
    ("octal 08", "keepalive = 08\n" + MINIMAL,
     ["bad.cf:1: keepalive: integer expected, got '08'"]),
    ("boolean expected", edit("    port = 8080\n", "    port = 8080\n    use_regex = 2\n"),
     ["bad.cf:6: use_regex: boolean expected (0 or 1), got '2'"]),
    ("host names are not resolved", edit("198.19.1.11", "rs1.example.test"),
     ["bad.cf:7: address: invalid host name or ip address 'rs1.example.test' "
      "(userlb does not resolve host names)"]),
    ("multicast address", edit("198.19.1.11", "224.0.0.1"),
     ["bad.cf:7: address: 224.0.0.1 is not a usable unicast address (multicast)"]),
    ("bad netmask", "nat_nmask = 255.0.255.0\n" + MINIMAL,
     ["bad.cf:1: nat_nmask: Bad subnet mask specified: '255.0.255.0'"]),
    ("scheduler lvs.cf does not know", edit("port = 8080", "scheduler = mh"),
     ["bad.cf:5: scheduler: invalid argument 'mh' (one of rr, wrr, lc, wlc, lblc, lblcr, dh, "
      "sh)"]),
    ("stray brace", MINIMAL + "}\n", ["bad.cf:11: unexpected '}' (no block is open)"]),
    ("brace with arguments", edit("    }\n}", "    } }\n}"),
     ["bad.cf:9: unexpected arguments after '}'"]),
    ("end of file inside a block", MINIMAL[:-2],
     ["bad.cf:2: unexpected end of file: 'virtual web' has no closing '}'"]),
    ("server header without name", edit("server rs1 {", "server {"),
     ["bad.cf:6: missing arguments (server NAME {)"]),
    ("network direct", "network = direct\n" + MINIMAL,
     ["bad.cf:1: network = direct: userlb is NAT only"]),
    ("fos", "service = fos\n" + MINIMAL,
     ["bad.cf:1: service = fos: failover services are not supported by userlb (LVS only)"]),
    ("fwmark", edit("port = 8080", "fwmark = 5"),
     ["bad.cf:5: fwmark: firewall-mark services cannot be read from lvs.cf (a TUN sees no "
      "netfilter marks); write them in TOML with [[service.match]]"]),
    ("duplicate service", MINIMAL + MINIMAL[MINIMAL.index("virtual"):],
     ["bad.cf:11: duplicate service TCP 198.18.1.100:8080 (first defined at line 2)"]),
    ("duplicate real server", edit("    }\n}", "    }\n    server rs2 {\n        address = "
                                   "198.19.1.11\n        active = 1\n    }\n}"),
     ["bad.cf:10: duplicate real server 198.19.1.11:8080 (first defined at line 6)"]),
    ("weight out of range", edit("active = 1\n    }", "active = 1\n        weight = 70000\n    }"),
     ["bad.cf:9: weight: must be in 0..65535, got 70000"]),
    ("zero port without persistence", edit("port = 8080", "port = 0"),
     ["bad.cf:5: port: Zero port specified for non-persistent service"]),
    ("deadtime not above keepalive", "keepalive = 5\ndeadtime = 5\n" + MINIMAL,
     ["bad.cf:2: deadtime: must exceed keepalive (5), got 5"]),
    ("no primary", MINIMAL.replace("primary = 198.18.1.2\n", "serial_no = 1\n"),
     ["bad.cf:1: missing required key 'primary' (the primary router's address)"]),
    ("virtual without address", edit("    address = 198.18.1.100 eth0:1\n", ""),
     ["bad.cf:2: virtual 'web': missing required key 'address'"]),
    ("bad regex", edit("    port = 8080\n", '    port = 8080\n    expect = "HTTP("\n'
                                            "    use_regex = 1\n"),
     ["bad.cf:6: expect: invalid regular expression: missing ), unterminated subpattern "
      "at position 4"]),
    ("empty file", "", ["bad.cf:1: Empty configuration"]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_broken_files_name_path_and_line(text, expected):
    assert errors(text) == expected


def test_every_error_is_reported_not_just_the_first():
    text = "bogus = 1\n" + edit("port = 8080", "port = 8080 # web").replace(
        "198.19.1.11", "rs.example")
    assert [e.split(":")[1] for e in errors(text)] == ["1", "6", "8"]


# -- what values mean -----------------------------------------------------------------------------

def test_strtol_integers_and_the_octal_warning():
    assert [integer(t) for t in ("010", "0x10", "10", "-1", "0")] == [8, 16, 10, -1, 0]
    config, warnings = lvscf.loads("keepalive = 010\ndeadtime = 020\n" + MINIMAL, "lvs.cf")
    assert (config.ha.heartbeat.keepalive_s, config.ha.heartbeat.deadtime_s) == (8.0, 16.0)
    assert str(warnings[0]) == ("lvs.cf:1: warning: keepalive: '010' is octal (= 8), "
                                "as Piranha's strtol reads it")


def test_tokenizer_quotes_and_blanks():
    assert tokenize("send = 'GET / HTTP/1.0'\t x") == ["send", "=", "GET / HTTP/1.0", "x"]
    assert tokenize('expect = "it\'s"') == ["expect", "=", "it's"]


def test_inactive_blocks_are_left_out_and_a_missing_active_is_warned():
    text = edit("active = 1\n    }", "active = 0\n    }") + (
        "virtual idle {\n    address = 198.18.1.101 eth0:2\n}\n")
    config, warnings = lvscf.loads(text, "lvs.cf")
    assert config.services[0].reals == ()
    assert len(config.services) == 1
    assert [str(w) for w in warnings] == [
        "lvs.cf:11: warning: virtual 'idle' has no 'active = 1': inactive, as Piranha reads a "
        "missing active as 0"]


def test_repeated_key_last_wins_with_a_warning():
    config, warnings = lvscf.loads(edit("port = 8080", "port = 8080\n    port = 8081"), "lvs.cf")
    assert config.services[0].port == 8081
    assert str(warnings[0]) == ("lvs.cf:6: warning: port: given again (first at line 5); "
                                "the last one counts")


def test_service_names_for_ports_and_server_port_default():
    config, _ = lvscf.loads(edit("port = 8080", "port = https"), "lvs.cf")
    assert config.services[0].port == 443
    assert config.services[0].reals[0].port == 443


def test_ignored_features_are_warned():
    text = ("active_cmd = /bin/true\nfailover f {\n    active = 1\n}\n"
            + edit("port = 8080", "port = 8080\n    load_monitor = uptime"))
    _, warnings = lvscf.loads(text, "lvs.cf")
    assert [str(w) for w in warnings] == [
        "lvs.cf:1: warning: active_cmd: not supported by userlb; ignored",
        "lvs.cf:2: warning: failover 'f': failover services (fos) are not supported by "
        "userlb; ignored",
        "lvs.cf:10: warning: load_monitor = uptime: not supported by userlb; weights stay fixed"]


# -- nanny's checks -----------------------------------------------------------------------------

def only_check(text: str):
    config, _ = lvscf.loads(text, "lvs.cf")
    return config.health[0].checks[0][0]


def test_port_80_rule_tcp_default_and_any_reply():
    knobs = nanny_knobs(SendExpectCheck)
    assert only_check(edit("port = 8080", "port = 80")) == SendExpectCheck(
        send="GET / HTTP/1.0\r\n\r\n", expect="HTTP", **knobs)
    assert only_check(MINIMAL) == TcpCheck(**nanny_knobs(TcpCheck))
    star = only_check(edit("port = 8080", 'port = 8080\n    send = "x"\n    expect = "*"'))
    assert (star.expect, star.regex) == ("", False)


def test_nanny_escapes_and_posix_classes():
    check = only_check(edit("port = 8080", r'''port = 8080
    send = "HELO a\r\n\\x\'"
    expect = "^2[[:digit:]]{2} "
    use_regex = 1'''))
    assert check.send == "HELO a\r\n\\x'"
    assert check.expect == "^2[0-9]{2} "


def test_udp_without_program_is_unchecked_with_a_warning():
    config, warnings = lvscf.loads(edit("port = 8080", "port = 53\n    protocol = udp"), "x")
    assert config.health[0].checks == ((),)
    assert "UDP checks are not supported by userlb" in str(warnings[0])


def test_sorry_server_and_remove_on_failure():
    config, _ = lvscf.loads(edit("port = 8080", "port = 8080\n    sorry_server = 198.19.1.99"),
                            "x")
    assert config.health[0].sorry_server == RealServer("198.19.1.99", 8080)
    assert config.health[0].on_failure == "remove"


# -- HA ---------------------------------------------------------------------------------------

def test_ha_config_for_primary_and_backup():
    config, _ = lvscf.loads(SAMPLE, "lvs.cf")
    primary = ha_config(config.ha, "198.18.1.2", key=b"k" * 16)
    backup = ha_config(config.ha, "198.18.1.3", key=b"k" * 16)
    assert primary.protocol is Protocol.HEARTBEAT and primary.failback is False
    assert primary.priority > backup.priority
    assert (str(primary.peer), str(backup.peer)) == ("198.18.1.3", "198.18.1.2")
    assert [str(v) for v in primary.vips] == ["198.18.1.100", "198.18.1.101", "198.19.1.254"]
    assert (primary.interface, primary.private_interface) == ("eth0", "eth1")
    assert str(primary.nat_router) == "198.19.1.254/24"
    assert (primary.deadtime_s, primary.heartbeat_port, primary.sync, primary.syncid) == (
        6.0, 539, True, 51)
    with pytest.raises(ValueError):
        ha_config(config.ha, "198.18.1.9")


def test_backup_active_without_backup_is_warned():
    config, warnings = lvscf.loads("backup_active = 1\n" + MINIMAL, "x")
    assert config.ha.heartbeat.backup_active is False
    assert "backup_active = 1 without backup" in str(warnings[0])


def test_example_lvs_cf_loads():
    config, warnings = lvscf.load(EXAMPLES / "lvs.cf")
    assert warnings == ()
    assert config.router == RouterConfig(client_interface="rc0", server_interface="br-rs")
    assert config.services == (VirtualService(
        "tcp", "198.18.1.100", 80, "wlc",
        tuple(RealServer(f"198.18.2.{n}", 8080, 1) for n in (11, 12, 13))),)
    assert config.ha.nat_router == FloatingAddress("198.18.2.1", 24, "br-rs", "br-rs:1")
    assert (config.ha.heartbeat.primary, config.ha.heartbeat.backup) == ("198.18.1.251",
                                                                         "198.18.1.252")
    assert config.health[0].on_failure == "quiesce"
