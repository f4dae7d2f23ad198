"""config: TOML → Config, every mistake as `path:line: message`, and diff() for reloads."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from userlb import config
from userlb.config import (Config, ConfigError, RouterConfig, TimeoutConfig, diff, load, loads)
from userlb.configdiff import (RealAdded, RealEdited, RealRemoved, RouterChanged, ServiceAdded,
                               ServiceChanged, ServiceRemoved, TimeoutsChanged)
from userlb.services import RealServer, VirtualService
from userlb.tomllines import KeyLines

DOCS = Path(__file__).parents[2] / "docs" / "config.md"

VALID = """\
[router]
tun = "ulb1"
client_interface = "c-rtr"
server_interface = "br-rs"
table_size = 1024
ctl_socket = "/tmp/ulb.sock"
trace_connections = 3
batch_size = 64
offload = true
io = "sqpoll"
queues = 2
[timeouts]
tcp = 600
tcpfin = 0
udp = 30
[[service]]
protocol = "tcp"
vip = "198.18.1.100"
port = 80
scheduler = "wrr"
  [[service.real]]
  address = "198.18.2.11"
  port = 8080
  weight = 2
  u_threshold = 100
  l_threshold = 50
  [[service.real]]
  address = "198.18.2.12"
[[service]]
protocol = "udp"
vip = "198.18.1.100"
port = 0
scheduler = "sh"
flags = ["sh-port", "sh-fallback"]
persistent = 360
persistence_mask = "255.255.255.0"
"""

EXPECTED = Config(
    RouterConfig("ulb1", "c-rtr", "br-rs", 1024, "/tmp/ulb.sock", 3, 64, True, io="sqpoll",
                 queues=2),
    TimeoutConfig(tcp=600, tcpfin=0, udp=30),
    (VirtualService("tcp", "198.18.1.100", 80, "wrr", (
        RealServer("198.18.2.11", 8080, 2, 100, 50), RealServer("198.18.2.12", 80))),
     VirtualService("udp", "198.18.1.100", 0, "sh", (), ("sh-port", "sh-fallback"), 360,
                    "255.255.255.0")))


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(textwrap.dedent(text), "lb.toml")
    return str(info.value).splitlines()


SERVICE = '[[service]]\nprotocol = "tcp"\nvip = "198.18.1.100"\nport = 80\n'
REAL = '  [[service.real]]\n  address = "198.18.2.11"\n'


# -- valid files ---------------------------------------------------------------------

def test_valid_file():
    assert loads(VALID) == EXPECTED


def test_empty_file_gives_the_defaults():
    assert loads("") == Config()
    assert Config().router.table_size == 65536 and Config().timeouts == TimeoutConfig(900, 120, 300)


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "lb.toml"
    path.write_text(VALID)
    assert load(path) == EXPECTED


def test_crlf_line_endings_and_bom(tmp_path):
    path = tmp_path / "lb.toml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.replace("\n", "\r\n").encode())
    assert load(path) == EXPECTED
    bad = (SERVICE + REAL + "  weight = 70000\n").replace("\n", "\r\n")
    path.write_bytes(bad.encode())
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (f"{path}:7: service[0].real[0].weight: must be in 0..65535, "
                               "got 70000")


def test_docs_example_is_valid_and_documents_every_key():
    text = DOCS.read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    cfg = loads(example, "docs/config.md")
    assert cfg.router == RouterConfig() and cfg.timeouts == TimeoutConfig()
    assert [s.port for s in cfg.services] == [80, 0, 0]
    assert cfg.services[2].match == (("tcp", "198.18.1.102", 80), ("tcp", "198.18.1.102", 443))
    assert cfg.services[1].reals[0] == RealServer("198.18.2.21", 0)
    keys = set(re.findall(r"^\s*(\w+) =", example, re.M))
    from userlb.configcheck import REAL_KEYS, ROUTER_KEYS, SERVICE_KEYS, TIMEOUT_KEYS
    assert keys == set(ROUTER_KEYS) | set(TIMEOUT_KEYS) | (set(SERVICE_KEYS) - {"real", "match", "health"}) | set(
        REAL_KEYS) - {"check"}


def test_module_docstring_lists_every_key():
    from userlb.configcheck import REAL_KEYS, ROUTER_KEYS, SERVICE_KEYS, TIMEOUT_KEYS
    for key in (*ROUTER_KEYS, *TIMEOUT_KEYS, *SERVICE_KEYS, *REAL_KEYS):
        assert re.search(rf"\b{key}\b", config.__doc__), key


def test_every_config_field_has_a_docstring():
    for cls in (RouterConfig, TimeoutConfig, Config, config.ConfigIssue, VirtualService,
                RealServer):
        docs = config.field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}, cls
    assert config.field_docs(RouterConfig)["tun"].startswith("Name of the TUN device")


def test_inline_tables_are_accepted():
    text = ('[[service]]\nprotocol = "tcp"\nvip = "198.18.1.100"\nport = 80\n'
            'real = [{ address = "198.18.2.11", weight = 2 }]\n')
    assert loads(text).services[0].reals == (RealServer("198.18.2.11", 80, 2),)


# -- one error of each kind ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # TOML syntax, position taken from tomllib's message
    ('[router]\ntun = "ulb0"\ntable_size = \n',
     "lb.toml:3: invalid TOML: Invalid value (column 14)"),
    ('[router]\ntun = "ulb0\n', "lb.toml:2: invalid TOML: Illegal character '\\n' (column 12)"),
    ('a = """never closed\n', "lb.toml:2: invalid TOML: Unterminated string"),
    ('[router]\ntun = "a"\ntun = "b"\n', "lb.toml:3: invalid TOML: Cannot overwrite a value "
                                         "(column 10)"),
    # unknown keys, with a suggestion when one is close
    ('[router]\ntabel_size = 5\n',
     "lb.toml:2: router.tabel_size: unknown key (did you mean 'table_size'?)"),
    ('[services]\n', "lb.toml:1: services: unknown key (did you mean 'service'?)"),
    (SERVICE + 'colour = "blue"\n', "lb.toml:5: service[0].colour: unknown key"),
    (SERVICE + REAL + '  wieght = 2\n',
     "lb.toml:7: service[0].real[0].wieght: unknown key (did you mean 'weight'?)"),
    # wrong types
    ('[router]\ntable_size = "big"\n', "lb.toml:2: router.table_size: must be an integer, "
                                        "got string"),
    ('[router]\noffload = 1\n', "lb.toml:2: router.offload: must be a boolean, got integer"),
    ('[router]\nbatch_size = true\n', "lb.toml:2: router.batch_size: must be an integer, "
                                      "got boolean"),
    ('[timeouts]\ntcp = 900.0\n', "lb.toml:2: timeouts.tcp: must be an integer, got float"),
    ('router = 5\n', "lb.toml:1: router: must be a table, got integer"),
    ('[service]\nport = 1\n', "lb.toml:1: service: must be an array of tables ([[service]]), "
                              "got table"),
    (SERVICE + 'real = 5\n', "lb.toml:5: service[0].real: must be an array of tables "
                             "([[service.real]]), got integer"),
    (SERVICE + 'flags = "sh-port"\n', "lb.toml:5: service[0].flags: must be an array, "
                                      "got string"),
    # missing required keys point at the table header
    ('[[service]]\nprotocol = "tcp"\nport = 80\n',
     "lb.toml:1: service[0]: missing required key 'vip'"),
    (SERVICE + '  [[service.real]]\n  port = 80\n',
     "lb.toml:5: service[0].real[0]: missing required key 'address'"),
    # addresses
    ('[[service]]\nprotocol = "tcp"\nvip = "198.18.1.300"\nport = 80\n',
     "lb.toml:3: service[0].vip: '198.18.1.300' is not a valid IPv4 address"),
    ('[[service]]\nprotocol = "tcp"\nvip = "224.0.0.1"\nport = 80\n',
     "lb.toml:3: service[0].vip: 224.0.0.1 is not a usable unicast address (multicast)"),
    (SERVICE + '  [[service.real]]\n  address = "0.0.0.0"\n',
     "lb.toml:6: service[0].real[0].address: 0.0.0.0 is not a usable unicast address "
     "(unspecified)"),
    # protocol and ports
    ('[[service]]\nprotocol = "icmp"\nvip = "198.18.1.100"\nport = 80\n',
     "lb.toml:2: service[0].protocol: must be 'tcp' or 'udp', got 'icmp'"),
    ('[[service]]\nprotocol = "tcp"\nvip = "198.18.1.100"\nport = 65536\n',
     "lb.toml:4: service[0].port: must be in 0..65535, got 65536"),
    ('[[service]]\nprotocol = "tcp"\nvip = "198.18.1.100"\nport = 0\n',
     "lb.toml:4: service[0].port: Zero port specified for non-persistent service"),
    (SERVICE + REAL + '  port = -1\n', "lb.toml:7: service[0].real[0].port: must be in "
                                       "0..65535, got -1"),
    # weight and thresholds
    (SERVICE + REAL + '  weight = 65536\n',
     "lb.toml:7: service[0].real[0].weight: must be in 0..65535, got 65536"),
    (SERVICE + REAL + '  u_threshold = 10\n  l_threshold = 20\n',
     "lb.toml:8: service[0].real[0].l_threshold: lower threshold 20 is higher than upper "
     "threshold 10"),
    (SERVICE + REAL + '  u_threshold = 2147483648\n',
     "lb.toml:7: service[0].real[0].u_threshold: must be in 0..2147483647, got 2147483648"),
    # scheduler and flags
    (SERVICE + 'scheduler = "lbl"\n',
     "lb.toml:5: service[0].scheduler: unknown scheduler 'lbl' (one of rr, wrr, lc, wlc, "
     "lblc, lblcr, dh, sh, sed, nq, fo, ovf, twos, mh)"),
    (SERVICE + 'scheduler = "sh"\nflags = ["sh-portt"]\n',
     "lb.toml:6: service[0].flags[0]: invalid scheduler flag 'sh-portt' (one of sh-fallback, "
     "sh-port, mh-fallback, mh-port)"),
    (SERVICE + 'flags = ["sh-port"]\n',
     "lb.toml:5: service[0].flags[0]: incompatible scheduler flag 'sh-port' (only with "
     "scheduler 'sh')"),
    # persistence
    (SERVICE + 'persistent = 2678401\n',
     "lb.toml:5: service[0].persistent: must be in 0..2678400, got 2678401"),
    (SERVICE + 'persistent = 60\npersistence_mask = "255.0.255.0"\n',
     "lb.toml:6: service[0].persistence_mask: '255.0.255.0' is not a valid netmask"),
    (SERVICE + 'persistence_mask = "/24"\n',
     "lb.toml:5: service[0].persistence_mask: '/24' is not a valid netmask"),
    # duplicates point at the second block and name the first
    (SERVICE + SERVICE, "lb.toml:5: service[1]: duplicate service TCP 198.18.1.100:80 "
                        "(first defined at line 1)"),
    (SERVICE + REAL + '  port = 80\n' + REAL,
     "lb.toml:8: service[0].real[1]: duplicate real server 198.18.2.11:80 "
     "(first defined at line 5)"),
    # timeouts and router
    ('[timeouts]\nudp = -1\n', "lb.toml:2: timeouts.udp: must be in 0..2678400, got -1"),
    ('[router]\ntable_size = 0\n', "lb.toml:2: router.table_size: must be at least 1, got 0"),
    ('[router]\nbatch_size = 0\n', "lb.toml:2: router.batch_size: must be at least 1, got 0"),
    ('[router]\nio = "fast"\n',
     "lb.toml:2: router.io: must be one of auto, read, uring, sqpoll, got 'fast'"),
    ('[router]\nqueues = 0\n', "lb.toml:2: router.queues: must be in 1..64, got 0"),
    ('[router]\ntrace_connections = -1\n',
     "lb.toml:2: router.trace_connections: must be at least 0, got -1"),
    ('[router]\ntun = "a-name-too-long-0"\n',
     "lb.toml:2: router.tun: 'a-name-too-long-0' is not a valid interface name "
     "(1..15 characters, no '/', ':' or whitespace)"),
    ('[router]\nctl_socket = "/%s"\n' % ("x" * 107),
     "lb.toml:2: router.ctl_socket: must be 1..107 bytes long (a unix socket path), got 108"),
])
def test_each_error(text, expected):
    assert errors(text) == [expected]


def test_several_errors_reported_together_in_line_order():
    text = """\
        [[service]]
        protocol = "tcp"
        vip = "198.18.1.300"
        port = 0
        scheduler = "rr"
          [[service.real]]
          address = "198.18.2.11"
          port = 8080
          weight = -1
        [router]
        table_size = 0
        [[service]]
        protocol = "udp"
        vip = "198.18.1.100"
        port = 53
          [[service.real]]
          addr = "198.18.2.12"
        """
    assert errors(text) == [
        "lb.toml:3: service[0].vip: '198.18.1.300' is not a valid IPv4 address",
        "lb.toml:4: service[0].port: Zero port specified for non-persistent service",
        "lb.toml:9: service[0].real[0].weight: must be in 0..65535, got -1",
        "lb.toml:11: router.table_size: must be at least 1, got 0",
        "lb.toml:16: service[1].real[0]: missing required key 'address'",
        "lb.toml:17: service[1].real[0].addr: unknown key (did you mean 'address'?)",
    ]


def test_duplicate_service_found_even_when_the_service_has_other_errors():
    text = SERVICE + SERVICE + 'weight = 1\n'
    assert errors(text) == [
        "lb.toml:5: service[1]: duplicate service TCP 198.18.1.100:80 (first defined at line 1)",
        "lb.toml:9: service[1].weight: unknown key",
    ]


def test_unreadable_and_non_utf8_files(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[router]\ntun = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert str(info.value) == f"{bad}:2: invalid UTF-8"
    assert info.value.issues == [config.ConfigIssue(str(bad), 2, "invalid UTF-8")]


# -- the line locator --------------------------------------------------------------------

def test_locator_counts_arrays_of_tables_and_skips_multiline_values():
    text = textwrap.dedent('''\
        # comment
        [[service]]
        flags = [
          "x = 1",
          "[[service]]",
        ]
        note = """
        [[service]]
        port = 9
        """
          [[service.real]]
          "address" = "198.18.2.1"
        [[ service ]]
        a.b = 1
          [[service.real]]
          [[service.real]]
          'port' = 5
        [router]
        ''')
    lines = KeyLines(text)
    assert lines.locate(("service", 0)) == 2
    assert lines.locate(("service", 0, "flags", 1)) == 3
    assert lines.locate(("service", 0, "note")) == 7
    assert lines.locate(("service", 0, "real", 0, "address")) == 12
    assert lines.locate(("service", 1)) == 13
    assert lines.locate(("service", 1, "a", "b")) == 14
    assert lines.locate(("service", 1, "real", 1, "port")) == 17
    assert lines.locate(("service", 1, "real", 1, "weight")) == 16
    assert lines.locate(("router", "tun")) == 18
    assert lines.locate(("missing",)) == 0


TRICKY = (
    '# header comment with [[service]] inside\n'
    'a = "string with # hash and [[brackets]]"\t# trailing comment\n'
    'b = \'literal \\ with "quote" ]\'\n'
    '"quoted key" = 1\n'
    '"esc\\"aped" = 2\n'
    "'' = 3\n"
    'c.d . e = 4\n'
    'f = """\n'
    'multi "" line \\"""\n'
    '[[not_a_table]]\n'
    'x = 1 """\n'
    "g = '''\n"
    'contains """ and ]]\n'
    "'''\n"
    'h = [\n'
    '  [1, 2], # nested\n'
    '  { i = "}", j = [3, 4] },\n'
    '  "]", \']\'\n'
    ']\n'
    'k = """line continuation \\\n'
    '  more"""\n'
    '\t[ table . "with space" ]\n'
    '\tm = 1\n'
    '[[arr]]\n'
    'n = 1\n'
    '[arr.sub]\n'
    'o = 2\n'
    '[[arr]]\n'
    'p = "a\\"b" \n'
    'q = """x""""\n'
    'r = 5\n'
)


def test_locator_survives_tricky_but_valid_toml():
    lines = KeyLines(TRICKY)
    assert {path: line for path, line in lines.lines.items() if len(path) == 1} == {
        ("a",): 2, ("b",): 3, ("quoted key",): 4, ('esc"aped',): 5, ("",): 6, ("c",): 7,
        ("f",): 8, ("g",): 12, ("h",): 15, ("k",): 20, ("table",): 22, ("arr",): 24}
    assert lines.locate(("c", "d", "e")) == 7
    assert lines.locate(("h", 1, "i")) == 15
    assert lines.locate(("table", "with space", "m")) == 23
    assert lines.locate(("arr", 0, "sub", "o")) == 27
    assert [lines.locate(("arr", 1, key)) for key in "pqr"] == [29, 30, 31]


def test_errors_inside_inline_tables_point_at_the_enclosing_key():
    text = SERVICE + 'real = [\n  { address = "198.18.2.11" },\n  { address = "x" },\n]\n'
    assert errors(text) == ["lb.toml:5: service[0].real[1].address: 'x' is not a valid IPv4 "
                            "address"]


# -- diff ------------------------------------------------------------------------------

def test_diff_of_identical_configs_is_empty():
    assert diff(EXPECTED, loads(VALID)) == []


def test_diff_lists_every_kind_of_change_in_apply_order():
    old = EXPECTED
    web, dns = old.services
    web2 = dataclasses.replace(web, scheduler="wlc", reals=(
        RealServer("198.18.2.12", 80, weight=5),          # edited (weight), and reordered
        RealServer("198.18.2.13", 80)))                   # added; 198.18.2.11:8080 removed
    extra = VirtualService("tcp", "198.18.1.101", 443, reals=(RealServer("198.18.2.20"),))
    new = Config(dataclasses.replace(old.router, batch_size=128, tun="ulb2"),
                 TimeoutConfig(600, 60, 30), (extra, web2))
    changes = diff(old, new)
    assert changes == [
        RouterChanged("tun", "ulb1", "ulb2"),
        RouterChanged("batch_size", 64, 128),
        TimeoutsChanged(old.timeouts, new.timeouts),
        ServiceRemoved(dns),
        ServiceAdded(extra),
        ServiceChanged(web, web2, ("scheduler",)),
        RealRemoved(web2, RealServer("198.18.2.11", 8080, 2, 100, 50)),
        RealAdded(web2, RealServer("198.18.2.13", 80)),
        RealEdited(web2, RealServer("198.18.2.12", 80), RealServer("198.18.2.12", 80, 5),
                   ("weight",)),
    ]
    assert changes[0].restart_required and not changes[1].restart_required


def test_diff_reordering_reals_is_not_a_change():
    web = EXPECTED.services[0]
    swapped = dataclasses.replace(web, reals=web.reals[::-1])
    assert diff(EXPECTED, dataclasses.replace(EXPECTED, services=(swapped,
                                                                  EXPECTED.services[1]))) == []


def test_diff_service_settings_and_thresholds():
    old = loads(SERVICE + REAL + "  u_threshold = 10\n")
    new = loads(SERVICE + 'persistent = 60\npersistence_mask = "255.255.0.0"\n' + REAL)
    svc_old, svc_new = old.services[0], new.services[0]
    assert diff(old, new) == [
        ServiceChanged(svc_old, svc_new, ("persistent_s", "netmask")),
        RealEdited(svc_new, svc_old.reals[0], svc_new.reals[0], ("u_threshold",)),
    ]


FWMARK = '''[[service]]
fwmark = 7
scheduler = "rr"
  [[service.match]]
  protocol = "tcp"
  vip = "198.18.1.100"
  port = 80
  [[service.real]]
  address = "198.18.2.11"
'''


def test_fwmark_service_loads_with_its_match_rules():
    (svc,) = loads(FWMARK, "f.toml").services
    assert (svc.fwmark, svc.match, svc.reals[0].port) == (7, (("tcp", "198.18.1.100", 80),), 0)


@pytest.mark.parametrize("text,expected", [
    ('[[service]]\nfwmark = 7\n', "f.toml:1: service[0]: a fwmark service needs at least one "
                                 "[[service.match]] rule"),
    (FWMARK + FWMARK.replace("port = 80", "port = 81"),
     "f.toml:10: service[1]: duplicate service FWM 7 (first defined at line 1)"),
    ('[[service]]\nprotocol = "tcp"\nvip = "198.18.1.1"\nport = 80\n'
     '[[service.match]]\nprotocol = "tcp"\nvip = "198.18.1.1"\n',
     "f.toml:5: service[0].match: only a fwmark service has match rules"),
    (FWMARK.replace("fwmark = 7", "fwmark = 0"), "f.toml:2: service[0].fwmark: must be in "
                                                 "1..4294967295, got 0"),
])
def test_fwmark_errors(text, expected):
    with pytest.raises(ConfigError) as info:
        loads(text, "f.toml")
    assert str(info.value) == expected
