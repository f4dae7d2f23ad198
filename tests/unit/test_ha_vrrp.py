"""ha/vrrp.py against scapy's VRRPv3 layer, a keepalived capture, and garbage."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRP, VRRPv3

from userlb.ha import vrrp
from userlb.ha.vrrp import Advert, VrrpDropReason, VrrpError

PCAP = Path(__file__).resolve().parents[1] / "data" / "tcpdump-ipv4.pcap"

# (description, vrid, priority, interval_cs, addrs, saddr)
ADVERTS = [
    ("keepalived lab advert (spec §3.1)", 51, 150, 100, ["198.18.5.100"], "198.18.5.1"),
    ("owner, one VIP", 1, 255, 100, ["10.0.0.1"], "10.0.0.1"),
    ("priority 0: master stopping", 7, 0, 100, ["10.0.0.100"], "10.0.0.2"),
    ("fastest interval", 255, 254, 1, ["192.0.2.1"], "192.0.2.254"),
    ("slowest interval, many VIPs", 200, 100, 4095, [f"198.18.0.{i}" for i in range(1, 21)], "198.18.1.1"),
]


def scapy_ip(vrid, priority, interval_cs, addrs, saddr, daddr="224.0.0.18", ttl=255):
    return IP(src=saddr, dst=daddr, ttl=ttl, tos=0xC0, id=0) / VRRPv3(
        vrid=vrid, priority=priority, adv=interval_cs, addrlist=addrs)


@pytest.mark.parametrize("desc,vrid,prio,interval,addrs,saddr", ADVERTS, ids=[a[0] for a in ADVERTS])
def test_encode_ip_matches_scapy_byte_for_byte(desc, vrid, prio, interval, addrs, saddr):
    adv = Advert(vrid, prio, interval, addrs, saddr)
    assert vrrp.encode_ip(adv) == bytes(scapy_ip(vrid, prio, interval, addrs, saddr))


@pytest.mark.parametrize("desc,vrid,prio,interval,addrs,saddr", ADVERTS, ids=[a[0] for a in ADVERTS])
def test_decode_scapy_packet(desc, vrid, prio, interval, addrs, saddr):
    wire = bytes(scapy_ip(vrid, prio, interval, addrs, saddr))
    assert vrrp.decode_ip(wire) == Advert(vrid, prio, interval, addrs, saddr)
    assert vrrp.decode(wire[20:], saddr) == Advert(vrid, prio, interval, addrs, saddr)


@pytest.mark.parametrize("desc,vrid,prio,interval,addrs,saddr", ADVERTS, ids=[a[0] for a in ADVERTS])
def test_checksum_agrees_with_scapy_in4_chksum(desc, vrid, prio, interval, addrs, saddr):
    dissected = IP(bytes(scapy_ip(vrid, prio, interval, addrs, saddr)))
    ours = vrrp.encode(Advert(vrid, prio, interval, addrs, saddr))
    assert struct.unpack("!H", ours[6:8])[0] == dissected[VRRPv3].chksum
    zeroed = ours[:6] + b"\0\0" + ours[8:]
    assert vrrp.checksum(zeroed, saddr) == dissected[VRRPv3].chksum


def test_keepalived_capture_verifies():
    # spec §3.1 [LAB]: keepalived 2.2.7 v3 advert, VRID 51, prio 150, 1 s, VIP 198.18.5.100
    captured = bytes.fromhex("313396010064c14dc6120564")
    adv = vrrp.decode(captured, "198.18.5.1")
    assert adv == Advert(51, 150, 100, ["198.18.5.100"], "198.18.5.1")
    assert vrrp.encode(adv) == captured


def test_unicast_checksum_uses_real_destination():
    adv = Advert(9, 120, 100, ["10.1.1.100"], "10.1.1.1")
    wire = vrrp.encode_ip(adv, daddr="10.1.1.2")
    assert wire == bytes(scapy_ip(9, 120, 100, ["10.1.1.100"], "10.1.1.1", daddr="10.1.1.2"))
    assert vrrp.decode_ip(wire, expect_daddr=None) == adv
    with pytest.raises(VrrpError) as err:
        vrrp.decode_ip(wire)                                # group expected by default
    assert err.value.reason is VrrpDropReason.BAD_DADDR
    with pytest.raises(VrrpError) as err:                   # checksum made for another dst
        vrrp.decode(wire[20:], "10.1.1.1", "224.0.0.18")
    assert err.value.reason is VrrpDropReason.BAD_CHECKSUM


GOOD = Advert(51, 150, 100, ["198.18.5.100"], "198.18.5.1")
GOOD_MSG = vrrp.encode(GOOD)
GOOD_IP = vrrp.encode_ip(GOOD)


def _with_sum(msg: bytes) -> bytes:
    """msg with a correct checksum, so that only the field under test is wrong."""
    zeroed = msg[:6] + b"\0\0" + msg[8:]
    return zeroed[:6] + struct.pack("!H", vrrp.checksum(zeroed, "198.18.5.1")) + zeroed[8:]


MESSAGE_GARBAGE = [
    ("empty", b"", VrrpDropReason.TRUNCATED),
    ("7 bytes", GOOD_MSG[:7], VrrpDropReason.TRUNCATED),
    ("VRRPv2", _with_sum(b"\x21" + GOOD_MSG[1:]), VrrpDropReason.BAD_VERSION),
    ("type 2", _with_sum(b"\x32" + GOOD_MSG[1:]), VrrpDropReason.BAD_TYPE),
    ("vrid 0", _with_sum(GOOD_MSG[:1] + b"\0" + GOOD_MSG[2:]), VrrpDropReason.BAD_VRID),
    ("count 0", _with_sum(GOOD_MSG[:3] + b"\0" + GOOD_MSG[4:8]), VrrpDropReason.BAD_COUNT),
    ("count 2, one address", _with_sum(GOOD_MSG[:3] + b"\2" + GOOD_MSG[4:]), VrrpDropReason.BAD_LENGTH),
    ("trailing byte", _with_sum(GOOD_MSG + b"\0"), VrrpDropReason.BAD_LENGTH),
    ("interval 0", _with_sum(GOOD_MSG[:4] + b"\0\0" + GOOD_MSG[6:]), VrrpDropReason.BAD_INTERVAL),
    ("checksum off by one", GOOD_MSG[:7] + bytes([GOOD_MSG[7] ^ 1]) + GOOD_MSG[8:],
     VrrpDropReason.BAD_CHECKSUM),
    ("address changed", GOOD_MSG[:-1] + b"\x65", VrrpDropReason.BAD_CHECKSUM),
]


@pytest.mark.parametrize("desc,msg,reason", MESSAGE_GARBAGE, ids=[g[0] for g in MESSAGE_GARBAGE])
def test_bad_messages_are_rejected_with_reason(desc, msg, reason):
    with pytest.raises(VrrpError) as err:
        vrrp.decode(msg, "198.18.5.1")
    assert err.value.reason is reason


def test_reserved_bits_are_ignored_on_receive():
    msg = _with_sum(GOOD_MSG[:4] + bytes([GOOD_MSG[4] | 0xF0]) + GOOD_MSG[5:])
    assert vrrp.decode(msg, "198.18.5.1") == GOOD


def _ip(ttl=255, proto=112, frag=0, vihl=0x45, total=None, dst="224.0.0.18", options=b"") -> bytes:
    """A datagram around GOOD_MSG with a correct IPv4 header checksum."""
    total = 20 + len(options) + len(GOOD_MSG) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", vihl, 0xC0, total, 0, frag, ttl, proto, 0,
                         IPv4Address("198.18.5.1").packed, IPv4Address(dst).packed) + options
    hsum = ~vrrp.ones_complement_sum(header) & 0xFFFF
    return header[:10] + struct.pack("!H", hsum) + header[12:] + GOOD_MSG


IP_GARBAGE = [
    ("19 bytes", GOOD_IP[:19], VrrpDropReason.TRUNCATED),
    ("TTL 254 (routed)", _ip(ttl=254), VrrpDropReason.BAD_TTL),
    ("TTL 1", _ip(ttl=1), VrrpDropReason.BAD_TTL),
    ("UDP", _ip(proto=17), VrrpDropReason.BAD_PROTOCOL),
    ("IPv6 version nibble", _ip(vihl=0x65), VrrpDropReason.BAD_IP_HEADER),
    ("IHL 4", _ip(vihl=0x44), VrrpDropReason.BAD_IP_HEADER),
    ("total length beyond data", _ip(total=100), VrrpDropReason.BAD_IP_HEADER),
    ("total length below IHL", _ip(total=12), VrrpDropReason.BAD_IP_HEADER),
    ("more fragments", _ip(frag=0x2000), VrrpDropReason.FRAGMENT),
    ("fragment offset", _ip(frag=0x0001), VrrpDropReason.FRAGMENT),
    ("to another group", _ip(dst="224.0.0.5"), VrrpDropReason.BAD_DADDR),
    ("IP header checksum wrong", GOOD_IP[:11] + bytes([GOOD_IP[11] ^ 0x40]) + GOOD_IP[12:],
     VrrpDropReason.BAD_IP_CHECKSUM),
    ("truncated VRRP", _ip(total=26)[:26], VrrpDropReason.TRUNCATED),
    ("VRRP cut inside the addresses", _ip(total=30)[:30], VrrpDropReason.BAD_LENGTH),
]


@pytest.mark.parametrize("desc,datagram,reason", IP_GARBAGE, ids=[g[0] for g in IP_GARBAGE])
def test_bad_datagrams_are_rejected_with_reason(desc, datagram, reason):
    with pytest.raises(VrrpError) as err:
        vrrp.decode_ip(datagram)
    assert err.value.reason is reason


def test_ip_options_and_trailing_link_padding_are_handled():
    router_alert = b"\x94\x04\x00\x00"
    assert vrrp.decode_ip(_ip(vihl=0x46, options=router_alert) + b"\0" * 6) == GOOD


def test_scapy_vrrpv2_is_rejected_as_wrong_version():
    v2 = bytes(IP(src="10.0.0.1", dst="224.0.0.18", ttl=255) / VRRP(vrid=1, addrlist=["10.0.0.9"]))
    with pytest.raises(VrrpError) as err:
        vrrp.decode_ip(v2)
    assert err.value.reason is VrrpDropReason.BAD_VERSION


def test_every_single_bit_flip_is_rejected():
    for bit in range(len(GOOD_IP) * 8):
        corrupt = bytearray(GOOD_IP)
        corrupt[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VrrpError):
            vrrp.decode_ip(bytes(corrupt))


def _pcap_records(path: Path):
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from("<IIII", data, offset)[2]
        yield data[offset + 16: offset + 16 + incl]
        offset += 16 + incl


def test_tcpdump_corpus_never_crashes_the_decoder():
    decoded = rejected = 0
    for datagram in _pcap_records(PCAP):
        attempts = (lambda: vrrp.decode_ip(datagram, None),
                    lambda: vrrp.decode(datagram[20:], "0.0.0.0"))
        for attempt in attempts:
            try:
                attempt()
                decoded += 1
            except VrrpError:
                rejected += 1
    assert rejected > 8000                                  # 4196 datagrams, two decoders each
    assert decoded < 10


@pytest.mark.parametrize("kwargs", [
    dict(vrid=0), dict(vrid=256), dict(priority=-1), dict(priority=256),
    dict(max_advert_int_cs=0), dict(max_advert_int_cs=4096), dict(addrs=()),
    dict(addrs=tuple(f"10.0.{i // 250}.{i % 250}" for i in range(256))),
])
def test_advert_rejects_out_of_range_fields(kwargs):
    base = dict(vrid=1, priority=100, max_advert_int_cs=100, addrs=("10.0.0.1",), saddr="10.0.0.2")
    with pytest.raises(ValueError):
        Advert(**{**base, **kwargs})
