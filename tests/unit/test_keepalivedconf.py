"""keepalivedconf: keepalived.conf → Config + health checks + VRRP HA settings.

The spec's complete example (ha-health-config.md §2.5) parses to the expected model; a corpus of
broken files gives `path:line: message`, also inside included files; includes with globs,
relative paths, blocks and cycles; CRLF; the lexer's brace and comment rules; examples/ files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from userlb import keepalivedconf
from userlb.config import ConfigError, RouterConfig, TimeoutConfig
from userlb.hasettings import (FloatingAddress, GarpSettings, SyncDaemon, SyncGroup, VrrpInstance,
                               ha_config)
from userlb.ha.config import Protocol
from userlb.health.presets import keepalived_knobs
from userlb.health.spec import ExternalCheck, HttpCheck, ServiceHealth, TcpCheck
from userlb.keepalivedlex import split_words
from userlb.services import RealServer, VirtualService

EXAMPLES = Path(__file__).parents[2] / "examples"

SAMPLE = """! userlb research example -- keepalived 2.2.7 syntax
global_defs {
    router_id lb1
    vrrp_version 3
    vrrp_garp_master_delay 5
    vrrp_garp_master_repeat 5
    vrrp_garp_master_refresh 60
    vrrp_garp_master_refresh_repeat 1
    lvs_sync_daemon eth1 VI_EXT id 51 port 8848 group 224.0.0.81
    enable_script_security
    script_user root
}

vrrp_sync_group VG_LB {
    group {
        VI_EXT
        VI_INT
    }
    notify_master "/usr/local/bin/lb-notify MASTER"
    notify_backup "/usr/local/bin/lb-notify BACKUP"
    notify_fault  "/usr/local/bin/lb-notify FAULT"
}

vrrp_instance VI_EXT {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    virtual_ipaddress {
        198.18.0.100/24 dev eth0
    }
}

vrrp_instance VI_INT {
    state BACKUP
    interface eth1
    virtual_router_id 52
    priority 150
    advert_int 1
    virtual_ipaddress {
        198.19.0.1/24 dev eth1
    }
}

virtual_server 198.18.0.100 80 {
    delay_loop 6
    lvs_sched wlc
    lvs_method NAT
    protocol TCP
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    quorum 2
    hysteresis 1
    alpha
    omega
    inhibit_on_failure
    connect_timeout 3
    retry 2
    delay_before_retry 2
    sorry_server 198.19.0.250 80

    real_server 198.19.0.11 80 {
        weight 3
        HTTP_GET {
            url {
                path /healthz
                status_code 200-299
            }
            url {
                path /index.html
                digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 2
            retry 3
            delay_before_retry 1
            warmup 3
        }
    }
    real_server 198.19.0.12 80 {
        weight 1
        TCP_CHECK {
            connect_port 80
            connect_timeout 2
        }
        MISC_CHECK {
            misc_path "/usr/local/bin/check_app 198.19.0.12"
            misc_timeout 5
            misc_dynamic
        }
    }
}

virtual_server 198.18.0.100 53 {
    delay_loop 10
    lvs_sched rr
    lvs_method NAT
    protocol UDP
    real_server 198.19.0.21 53 {
        DNS_CHECK {
            type A
            name example.test
            connect_timeout 2
        }
    }
}

virtual_server 198.18.0.100 25 {
    delay_loop 30
    lvs_sched lc
    lvs_method NAT
    protocol TCP
    real_server 198.19.0.31 25 {
        SMTP_CHECK {
            helo_name lb1.example.test
            connect_timeout 5
            retry 1
        }
    }
}
"""

WEB = VirtualService("tcp", "198.18.0.100", 80, "wlc",
                     (RealServer("198.19.0.11", 80, 3), RealServer("198.19.0.12", 80, 1)),
                     (), 300, "255.255.255.0")
DNS = VirtualService("udp", "198.18.0.100", 53, "rr", (RealServer("198.19.0.21", 53, 1),))
SMTP = VirtualService("tcp", "198.18.0.100", 25, "lc", (RealServer("198.19.0.31", 25, 1),))


def http(path: str, **fields) -> HttpCheck:
    knobs = keepalived_knobs(HttpCheck, delay_loop_s=6, retry=3, connect_timeout_s=2)
    knobs.update(delay_before_retry_s=1.0, warmup_s=3.0, alpha=True)     # checker and vs values
    return HttpCheck(path=path, http_version="1.0", **knobs, **fields)


WEB_HEALTH = ServiceHealth(
    service=WEB, on_failure="quiesce", quorum=2, hysteresis=1,
    sorry_server=RealServer("198.19.0.250", 80),
    checks=(
        (http("/healthz"), http("/index.html", digest_md5="9b3a0c85a887a256d6939da88aabd8cd")),
        (TcpCheck(connect_port=80,
                  **{**keepalived_knobs(TcpCheck, delay_loop_s=6, retry=2, connect_timeout_s=2),
                     "alpha": True, "delay_before_retry_s": 2.0}),
         ExternalCheck(program="/usr/local/bin/check_app", args=("198.19.0.12",),
                       **{**keepalived_knobs(ExternalCheck, delay_loop_s=6, retry=2),
                          "timeout_s": 5.0, "alpha": True, "delay_before_retry_s": 2.0},
                       dynamic=True))))
INSTANCES = (
    VrrpInstance("VI_EXT", "eth0", 51, 150, "BACKUP", 100,
                 addresses=(FloatingAddress("198.18.0.100", 24, "eth0"),)),
    VrrpInstance("VI_INT", "eth1", 52, 150, "BACKUP", 100,
                 addresses=(FloatingAddress("198.19.0.1", 24, "eth1"),)))

MINIMAL = """\
virtual_server 198.18.0.100 80 {
    lb_algo rr
    lb_kind NAT
    real_server 198.19.0.11 8080 {
        weight 2
        TCP_CHECK {
            connect_timeout 2
        }
    }
}
"""


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def errors(text: str, path: str = "bad.conf") -> list[str]:
    with pytest.raises(ConfigError) as info:
        keepalivedconf.loads(text, path)
    return [str(issue) for issue in info.value.issues]


def edit(old: str, new: str, text: str = MINIMAL) -> str:
    assert old in text
    return text.replace(old, new, 1)


# -- the spec's example ---------------------------------------------------------------------------

def test_spec_example_services_router_timeouts():
    config, _ = keepalivedconf.loads(SAMPLE, "keepalived.conf")
    assert config.services == (WEB, DNS, SMTP)
    assert config.router == RouterConfig(client_interface="eth0", server_interface="eth1")
    assert config.timeouts == TimeoutConfig()


def test_spec_example_health_inherits_timing_down_the_blocks():
    config, _ = keepalivedconf.loads(SAMPLE, "keepalived.conf")
    assert config.health[0] == WEB_HEALTH
    assert config.health[0].checks[0][0].fall == 4                    # retry 3 + 1
    assert [h.checks for h in config.health[1:]] == [((),), ((),)]    # DNS/SMTP_CHECK skipped


def test_spec_example_vrrp():
    config, _ = keepalivedconf.loads(SAMPLE, "keepalived.conf")
    ha = config.ha
    assert ha.protocol == "vrrp" and ha.vrrp_version == 3
    assert ha.instances == INSTANCES
    assert ha.floating == tuple(a for i in INSTANCES for a in i.addresses)
    assert ha.sync_groups == (SyncGroup("VG_LB", ("VI_EXT", "VI_INT")),)
    assert ha.sync_daemon == SyncDaemon("eth1", 51, "VI_EXT", 8848, "224.0.0.81")
    assert ha.garp == GarpSettings(repeat=5, delay_s=5.0, refresh_s=60.0, refresh_repeat=1)


def test_spec_example_warnings():
    _, warnings = keepalivedconf.loads(SAMPLE, "k.conf")
    expected = [(line_of(SAMPLE, "notify_master"), "notify_master: not supported by userlb; ignored"),
                (line_of(SAMPLE, "notify_backup"), "notify_backup: not supported by userlb; ignored"),
                (line_of(SAMPLE, "notify_fault"), "notify_fault: not supported by userlb; ignored"),
                (line_of(SAMPLE, "omega"), "omega: not supported by userlb; ignored"),
                (line_of(SAMPLE, "DNS_CHECK"), "DNS_CHECK: not supported by userlb; ignored "
                                               "(a real server without checks is always up)"),
                (line_of(SAMPLE, "SMTP_CHECK"), "SMTP_CHECK: not supported by userlb; ignored "
                                                "(a real server without checks is always up)")]
    assert [str(w) for w in warnings] == [f"k.conf:{n}: warning: {m}" for n, m in expected]


def test_ha_config_from_a_sync_group():
    config, _ = keepalivedconf.loads(SAMPLE, "keepalived.conf")
    node = ha_config(config.ha, "198.18.0.2")
    assert node.protocol is Protocol.VRRP
    assert (node.vrid, node.priority, node.advert_int_cs, node.failback) == (51, 150, 100, True)
    assert [str(v) for v in node.vips] == ["198.18.0.100", "198.19.0.1"]
    assert (node.interface, node.private_interface, str(node.nat_router)) == (
        "eth0", "eth1", "198.19.0.1/24")
    assert (node.sync, node.syncid, node.garp_refresh_s) == (True, 51, 60.0)
    assert ha_config(config.ha, "198.19.0.2", instance="VI_INT").vrid == 52


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_crlf_and_cr_files_read_like_lf(eol):
    assert keepalivedconf.loads(SAMPLE.replace("\n", eol), "k") == keepalivedconf.loads(SAMPLE, "k")


# -- broken files -----------------------------------------------------------------------------

VRRP = """\
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        198.18.0.100/24
    }
}
"""

CORPUS = [
    ("lb_kind DR", edit("lb_kind NAT", "lb_kind DR"),
     ["bad.conf:3: lb_kind: DR: userlb is NAT only"]),
    ("per-server lvs_method", edit("weight 2", "lvs_method TUN"),
     ["bad.conf:5: lvs_method: TUN: userlb is NAT only"]),
    ("unknown scheduler", edit("lb_algo rr", "lb_algo xyz"),
     ["bad.conf:2: lb_algo: unknown scheduler 'xyz' (one of rr, wrr, lc, wlc, lblc, lblcr, dh, "
      "sh, sed, nq, fo, ovf, twos, mh)"]),
    ("SCTP", edit("lb_algo rr", "protocol SCTP"),
     ["bad.conf:2: protocol: SCTP: userlb balances TCP and UDP only"]),
    ("weight below 0", edit("weight 2", "weight -1"),
     ["bad.conf:5: weight: must be in 0..65535, got -1"]),
    ("thresholds", edit("weight 2", "uthreshold 10\n        lthreshold 20"),
     ["bad.conf:4: real_server: lower threshold 20 is higher than upper threshold 10"]),
    ("fwmark service", edit("198.18.0.100 80 {", "fwmark 7 {"),
     ["bad.conf:1: virtual_server: fwmark services cannot be read from keepalived.conf (a TUN "
      "sees no netfilter marks); write them in TOML with [[service.match]]"]),
    ("group service", edit("198.18.0.100 80 {", "group G1 {"),
     ["bad.conf:1: virtual_server: group G1: virtual_server_group is not supported by userlb; "
      "write one virtual_server per address and port"]),
    ("no port, not persistent", edit("198.18.0.100 80 {", "198.18.0.100 {"),
     ["bad.conf:1: virtual_server: a port may be left out only with persistence_timeout"]),
    ("IPv6", edit("198.18.0.100 80 {", "2001:db8::1 80 {"),
     ["bad.conf:1: virtual_server: '2001:db8::1': IPv6 is not supported by userlb"]),
    ("bad real server address", edit("198.19.0.11 8080", "198.19.0.256 8080"),
     ["bad.conf:4: real_server: '198.19.0.256' is not a valid IPv4 address"]),
    ("incompatible scheduler flag", edit("lb_algo rr", "lb_algo rr\n    sh-port"),
     ["bad.conf:3: sh-port: incompatible scheduler flag (scheduler is 'rr')"]),
    ("bad persistence mask", edit("lb_algo rr", "persistence_timeout\n    "
                                                "persistence_granularity 255.0.255.0"),
     ["bad.conf:3: persistence_granularity: '255.0.255.0' is not a valid netmask"]),
    ("unterminated quote", edit("weight 2", 'weight 2\n        notify_up "/bin/true'),
     ["bad.conf:6: unterminated quoted string"]),
    ("stray brace", MINIMAL + "}\n", ["bad.conf:11: unexpected '}' (no block is open)"]),
    ("end of file inside a block", MINIMAL[:-2],
     ["bad.conf:1: end of file inside the block 'virtual_server 198.18.0.100 80' opened here: "
      "missing '}'"]),
    ("duplicate service", MINIMAL + MINIMAL,
     ["bad.conf:11: virtual_server: duplicate service TCP 198.18.0.100:80 (first defined at "
      "line 1)"]),
    ("duplicate real server", edit("}\n}", "}\n    real_server 198.19.0.11 8080 {\n    }\n}"),
     ["bad.conf:10: real_server: duplicate real server 198.19.0.11:8080 (first defined at "
      "line 4)"]),
    ("connect_port 0", edit("connect_timeout 2", "connect_port 0"),
     ["bad.conf:7: connect_port: must be in 1..65535, got 0"]),
    ("timer is not a number", edit("connect_timeout 2", "connect_timeout 2s"),
     ["bad.conf:7: connect_timeout: number of seconds expected, got '2s'"]),
    ("url without path", edit("TCP_CHECK {", "HTTP_GET {\n            url {\n            }"),
     ["bad.conf:7: url: missing 'path'"]),
    ("bad digest", edit("TCP_CHECK {", "HTTP_GET {\n            url {\n                path /\n"
                                      "                digest xyz\n            }"),
     ["bad.conf:6: HTTP_GET: digest_md5 must be 32 lower-case hex digits"]),
    ("bad status code", edit("TCP_CHECK {", "HTTP_GET {\n            url {\n                path /\n"
                                           "                status_code 200 700\n            }"),
     ["bad.conf:9: status_code: expected codes 100..599 or ranges like 200-299, got '200 700'"]),
    ("MISC_CHECK without misc_path", edit("TCP_CHECK {", "MISC_CHECK {"),
     ["bad.conf:6: MISC_CHECK: missing misc_path"]),
    ("vrrp instance without interface and vrid", "vrrp_instance VI_1 {\n    priority 100\n}\n",
     ["bad.conf:1: vrrp_instance VI_1: missing 'interface'",
      "bad.conf:1: vrrp_instance VI_1: missing 'virtual_router_id'"]),
    ("priority 300", edit("virtual_router_id 51", "virtual_router_id 51\n    priority 300", VRRP),
     ["bad.conf:4: priority: must be in 1..255, got 300"]),
    ("advert_int beyond VRRPv3", edit("virtual_router_id 51", "virtual_router_id 51\n"
                                                              "    advert_int 41", VRRP),
     ["bad.conf:4: advert_int: must be 0.01..40.95 seconds (VRRPv3), got '41'"]),
    ("bad address in virtual_ipaddress", edit("198.18.0.100/24", "198.18.0.100/33", VRRP),
     ["bad.conf:5: virtual_ipaddress: bad prefix length '/33'"]),
    ("unknown address option", edit("198.18.0.100/24", "198.18.0.100/24 colour red", VRRP),
     ["bad.conf:5: virtual_ipaddress: unknown address option 'colour'"]),
    ("vrid used twice on one interface", VRRP + VRRP.replace("VI_1", "VI_2"),
     ["bad.conf:8: vrrp_instance VI_2: virtual_router_id 51 is already used on eth0 (line 1)"]),
    ("sync daemon for an unknown instance",
     "global_defs {\n    lvs_sync_daemon eth1 VI_9\n}\n" + VRRP,
     ["bad.conf:2: lvs_sync_daemon: no vrrp_instance VI_9"]),
    ("vrrp_version 4", "global_defs {\n    vrrp_version 4\n}\n",
     ["bad.conf:2: vrrp_version: must be in 2..3, got 4"]),
    ("bad virtual_server_group entry", "virtual_server_group G {\n    198.18.0.300 80\n}\n",
     ["bad.conf:2: virtual_server_group entry '198.18.0.300 80': Octet 300 (> 255) not "
      "permitted in '198.18.0.300'"]),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_broken_files_name_path_and_line(text, expected):
    assert errors(text) == expected


def test_unknown_and_unsupported_keywords_are_warnings():
    text = edit("lb_algo rr", "lb_algo rr\n    frobnicate 1\n    ha_suspend") + (
        "mystery {\n    a b\n}\nvrrp_script chk {\n    script /bin/true\n}\n")
    config, warnings = keepalivedconf.loads(text, "k.conf")
    assert len(config.services) == 1
    assert [str(w) for w in warnings] == [
        "k.conf:3: warning: unknown keyword 'frobnicate' in virtual_server; ignored",
        "k.conf:4: warning: ha_suspend: not supported by userlb; ignored",
        "k.conf:13: warning: unknown keyword 'mystery' in the top level; ignored",
        "k.conf:16: warning: vrrp_script: not supported by userlb; ignored"]


def test_vrrp_warnings_version_2_nopreempt_and_sync_group_members():
    text = edit("virtual_router_id 51", "virtual_router_id 51\n    state MASTER\n    nopreempt",
                VRRP) + "vrrp_sync_group G {\n    group { VI_1 VI_9 }\n}\n"
    config, warnings = keepalivedconf.loads(text, "k.conf")
    assert config.ha.vrrp_version == 2
    assert config.ha.instances[0].preempt is False
    assert config.ha.sync_groups == (SyncGroup("G", ("VI_1",)),)
    assert [str(w) for w in warnings] == [
        "k.conf:1: warning: vrrp_instance VI_1: nopreempt needs state BACKUP (keepalived "
        "ignores it)",
        "k.conf:1: warning: VRRP version 2 (keepalived's default without 'vrrp_version 3'): "
        "userlb speaks VRRPv3 only; set vrrp_version 3 on keepalived peers",
        "k.conf:10: warning: vrrp_sync_group G: no vrrp_instance VI_9; ignored"]


def test_inhibit_on_failure_is_per_service():
    one = edit("weight 2", "weight 2\n        inhibit_on_failure")
    config, warnings = keepalivedconf.loads(one, "k")
    assert config.health[0].on_failure == "quiesce" and warnings == ()
    two = edit("}\n}", "}\n    real_server 198.19.0.12 8080 {\n    }\n}", one)
    config, warnings = keepalivedconf.loads(two, "k")
    assert config.health[0].on_failure == "remove"
    assert "inhibit_on_failure differs between real servers" in str(warnings[0])


def test_values_and_defaults():
    text = edit("lb_algo rr", "lvs_sched sh\n    flag-2\n    persistence_timeout\n"
                              "    sorry_server 198.19.0.99\n    quorum 3") + \
        "global_defs {\n    lvs_timeouts tcp 600 udp 30\n}\n"
    config, _ = keepalivedconf.loads(text, "k")
    service, health = config.services[0], config.health[0]
    assert (service.scheduler, service.sched_flags, service.persistent_s) == ("sh", ("sh-port",), 360)
    assert (health.quorum, health.sorry_server) == (3, RealServer("198.19.0.99", 80))
    assert config.timeouts == TimeoutConfig(tcp=600, tcpfin=120, udp=30)
    assert config.ha is None
    check = health.checks[0][0]
    assert (check.interval_s, check.fall, check.connect_timeout_s) == (60.0, 2, 2.0)


def test_misc_path_is_split_like_shell_words():
    text = edit("TCP_CHECK {\n            connect_timeout 2",
                "MISC_CHECK {\n            misc_path \"/bin/check 'a b' %h\"")
    check = keepalivedconf.loads(text, "k")[0].health[0].checks[0][0]
    assert (check.program, check.args, check.timeout_s) == ("/bin/check", ("a b", "%h"), 60.0)


# -- the lexer ----------------------------------------------------------------------------------

def test_words_comments_quotes_and_braces():
    assert split_words('a "b c"{d} # x') == [("", "a"), ('"', "b c"), ("", "{"), ("", "d"),
                                             ("", "}")]
    assert split_words("  ! all comment") == []
    assert split_words('x "{"') == [("", "x"), ('"', "{")]


def test_brace_forms_all_parse_alike():
    attached = MINIMAL.replace(" {", "{")
    own_line = MINIMAL.replace(" {\n", "\n{\n")
    inline = "virtual_server 198.18.0.100 80 { lb_algo rr\n real_server 198.19.0.11 8080 " \
             "{ weight 2\n TCP_CHECK { connect_timeout 2 } } }\n"
    expected = keepalivedconf.loads(MINIMAL, "k")[0]
    for text in (attached, own_line, inline):
        assert keepalivedconf.loads(text, "k")[0] == expected


# -- include ------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_include_glob_sorted_and_relative_to_the_including_file(tmp_path):
    main = write(tmp_path / "keepalived.conf", "include conf.d/*.conf\n")
    write(tmp_path / "conf.d" / "b.conf", MINIMAL.replace(" 80 {", " 443 {"))
    write(tmp_path / "conf.d" / "a.conf", MINIMAL + "include more/c.conf\n")
    write(tmp_path / "conf.d" / "more" / "c.conf", MINIMAL.replace(" 80 {", " 8443 {"))
    config, warnings = keepalivedconf.load(main)
    assert [s.port for s in config.services] == [80, 8443, 443]
    assert warnings == ()


def test_include_inside_a_block(tmp_path):
    reals = MINIMAL[MINIMAL.index("    real_server"):MINIMAL.rindex("}")]
    main = write(tmp_path / "k.conf", MINIMAL[:MINIMAL.index("    real_server")]
                 + "    include reals/*.conf\n}\n")
    write(tmp_path / "reals" / "rs.conf", reals)
    assert keepalivedconf.load(main)[0] == keepalivedconf.loads(MINIMAL, "x")[0]


def test_errors_inside_included_files_name_them(tmp_path):
    main = write(tmp_path / "k.conf", "include a.conf\nvirtual_server 198.18.0.1 80 {\n"
                                      "    lb_kind DR\n}\n")
    inc = write(tmp_path / "a.conf", edit("weight 2", "weight 99999"))
    with pytest.raises(ConfigError) as info:
        keepalivedconf.load(main)
    assert [str(i) for i in info.value.issues] == [
        f"{main}:3: lb_kind: DR: userlb is NAT only",
        f"{inc}:5: weight: must be in 0..65535, got 99999"]


def test_blocks_must_close_in_their_own_file(tmp_path):
    main = write(tmp_path / "k.conf", "include a.conf\n" + VRRP)
    inc = write(tmp_path / "a.conf", MINIMAL[:-2])
    with pytest.raises(ConfigError) as info:
        keepalivedconf.load(main)
    assert [str(i) for i in info.value.issues] == [
        f"{inc}:1: end of file inside the block 'virtual_server 198.18.0.100 80' opened here: "
        "missing '}'"]


def test_include_cycles_are_errors(tmp_path):
    main = write(tmp_path / "k.conf", "include sub/a.conf\n")
    a = write(tmp_path / "sub" / "a.conf", "include b.conf\n")
    b = write(tmp_path / "sub" / "b.conf", MINIMAL + "include ../k.conf\n")
    with pytest.raises(ConfigError) as info:
        keepalivedconf.load(main)
    chain = " -> ".join(str(p.resolve()) for p in (main, a, b, main))
    assert [str(i) for i in info.value.issues] == [f"{b}:11: include cycle: {chain}"]
    write(tmp_path / "self.conf", "\ninclude self.conf\n")
    assert errors("\ninclude self.conf\n", str(tmp_path / "self.conf"))[0].endswith(
        "self.conf:2: include cycle: " + " -> ".join([str((tmp_path / "self.conf").resolve())] * 2))


def test_missing_include_is_an_error_an_empty_glob_a_warning(tmp_path):
    main = write(tmp_path / "k.conf", "include nothing/*.conf\ninclude missing.conf\n")
    with pytest.raises(ConfigError) as info:
        keepalivedconf.load(main)
    assert [str(i) for i in info.value.issues] == [
        f"{main}:2: include: cannot read '{tmp_path / 'missing.conf'}': No such file or directory"]
    write(main, "include nothing/*.conf\n")
    assert [str(w) for w in keepalivedconf.load(main)[1]] == [
        f"{main}:1: warning: include: no file matches 'nothing/*.conf'"]


def test_crlf_included_file(tmp_path):
    main = write(tmp_path / "k.conf", "include a.conf\r\n")
    (tmp_path / "a.conf").write_bytes(edit("weight 2", "weight x").replace("\n", "\r\n").encode())
    assert errors_of(main) == [f"{tmp_path / 'a.conf'}:5: weight: integer expected, got 'x'"]


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        keepalivedconf.load(path)
    return [str(i) for i in info.value.issues]


# -- examples -----------------------------------------------------------------------------------

def test_example_keepalived_conf_loads():
    config, warnings = keepalivedconf.load(EXAMPLES / "keepalived.conf")
    assert warnings == ()
    assert config.router == RouterConfig(client_interface="rc0", server_interface="br-rs")
    assert config.services == (VirtualService(
        "tcp", "198.18.1.100", 80, "wlc",
        tuple(RealServer(f"198.18.2.{n}", 8080, 1) for n in (11, 12, 13))),)
    assert [i.interface for i in config.ha.instances] == ["rc0", "br-rs"]
    assert config.health[0].on_failure == "quiesce"
    assert all(c[0].path == "/" and c[0].status_codes == (200,) for c in config.health[0].checks)
