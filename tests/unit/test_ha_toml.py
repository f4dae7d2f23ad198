"""The native config's [ha] table (userlb/hacheck.py): docs example, defaults, errors as path:line."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from userlb.config import ConfigError, loads
from userlb.ha.config import HaConfig, Protocol
from userlb.hacheck import HA_KEYS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
HEAD = ('[router]\nclient_interface = "rc0"\nserver_interface = "rp0"\n\n'
        '[[service]]\nprotocol = "tcp"\nvip = "198.18.1.100"\nport = 80\n\n')
KEY = "00112233445566778899aabbccddeeff"


def docs_example() -> str:
    text = DOCS.read_text()
    return re.search(r"## High availability.*?```toml\n(.*?)```", text, re.S).group(1)


def test_docs_example_is_valid_and_documents_every_key():
    example = docs_example()
    ha = loads(HEAD + example, "docs/config.md").ha
    assert isinstance(ha, HaConfig)
    assert ha.protocol is Protocol.HEARTBEAT and ha.priority == 150 and ha.vrid == 51
    assert ha.vips == (IPv4Address("198.18.1.100"), IPv4Address("198.18.2.1"))
    assert ha.nat_router == IPv4Interface("198.18.2.1/24")
    assert ha.interface == "rc0" and ha.private_interface == "rp0" and ha.sync_interface == "rp0"
    assert ha.advert_int_cs == 100 and ha.keepalive_s == 2.0 and ha.deadtime_s == 5.0
    assert len(ha.key) == 18 and "key=" not in repr(ha)
    keys = set(re.findall(r"^#?\s*(\w+) =", example, re.M))
    assert keys == set(HA_KEYS)


def test_defaults_come_from_haconfig_and_router():
    ha = loads(HEAD + '[ha]\nprimary = "198.18.1.251"\n').ha
    default = HaConfig("198.18.1.251", ("198.18.1.100",))
    assert ha.protocol is Protocol.VRRP and ha.key == b"" and ha.peer is None
    assert (ha.interface, ha.private_interface, ha.sync_interface) == ("rc0", "rp0", "rp0")
    for name in ("priority", "vrid", "advert_int_cs", "keepalive_s", "deadtime_s", "failback",
                 "garp_repeat", "garp_delay_s", "sync", "sync_port", "sync_group", "syncid"):
        assert getattr(ha, name) == getattr(default, name), name
    assert loads(HEAD).ha is None


def test_key_file_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "ha.key").write_text(KEY + "\n")
    cfg = tmp_path / "lb.toml"
    cfg.write_text(HEAD + '[ha]\nprotocol = "heartbeat"\nprimary = "198.18.1.251"\n'
                   'peer = "198.18.1.252"\nkey_file = "ha.key"\n')
    from userlb.config import load
    assert load(cfg).ha.key == bytes.fromhex(KEY)


ERRORS = [
    ('protocol = "carp"', "ha.protocol: must be one of 'vrrp', 'heartbeat', got 'carp'"),
    ('primary = "198.18.1.300"', "ha.primary: '198.18.1.300' is not a valid IPv4 address"),
    ('priorty = 5', "ha.priorty: unknown key (did you mean 'priority'?)"),
    ('priority = 0', "ha.priority: must be in 1..255, got 0"),
    ('advert_int = 50', "ha.advert_int: must be in 0.01..40.95 s, got 50"),
    ('advert_int = "1s"', "ha.advert_int: must be a number of seconds, got str"),
    ('failback = 1', "ha.failback: must be true or false, got 1"),
    ('nat_router = "198.18.2.1"', "ha.nat_router: '198.18.2.1' must be a unicast address with "
                                  "its prefix length, e.g. \"198.18.2.1/24\""),
    ('sync_group = "198.18.2.9"', "ha.sync_group: '198.18.2.9' is not an IPv4 multicast address"),
    ('key = "abcd"', "ha.key: must be at least 16 bytes as hex digits (32 or more), "
                     "e.g. from `openssl rand -hex 32`"),
    ('deadtime = 1', "ha.deadtime: must exceed keepalive (2 s), got 1"),
    ('peer = "198.18.1.251"', "ha.peer: must differ from primary"),
    ('peer_private = "198.18.2.252"', "ha.peer_private: needs this router's own 'private_address'"),
    ('interface = "a/b"', "ha.interface: 'a/b' is not a valid interface name "
                          "(1..15 characters, no '/', ':' or whitespace)"),
]


@pytest.mark.parametrize("line, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_point_at_the_line(line, message):
    text = HEAD + '[ha]\nprimary = "198.18.1.251"\n' + line + "\n"
    if line.startswith("primary"):
        text = HEAD + "[ha]\n" + line + "\n"
    with pytest.raises(ConfigError) as info:
        loads(text, "lb.toml")
    lineno = text.split("\n").index(line) + 1
    assert f"lb.toml:{lineno}: {message}" in str(info.value).splitlines()


def test_heartbeat_needs_key_and_peer_and_something_to_move():
    with pytest.raises(ConfigError) as info:
        loads('[ha]\nprotocol = "heartbeat"\nprimary = "198.18.1.251"\n', "lb.toml")
    assert str(info.value).splitlines() == [
        "lb.toml:1: ha: protocol 'heartbeat' needs a shared key (key or key_file)",
        "lb.toml:1: ha: no address to fail over: define a [[service]] or nat_router",
        "lb.toml:1: ha: protocol 'heartbeat' needs the partner's address 'peer'",
    ]
    ok = loads(f'[ha]\nprimary = "198.18.1.251"\nnat_router = "198.18.2.1/24"\n').ha
    assert ok.vips == (IPv4Address("198.18.2.1"),)
