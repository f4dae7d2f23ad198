"""ha/garp.py against scapy's Ether/ARP and keepalived's captured layout (spec §4.1)."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import ARP, Ether

from userlb.ha import garp

MAC = "52:54:00:12:34:56"
MAC_BYTES = bytes.fromhex("525400123456")

# (description, vip, op, target MAC scapy should see)
FORMS = [
    ("keepalived request form", "198.18.5.100", garp.ARP_REQUEST, "ff:ff:ff:ff:ff:ff"),
    ("RFC 2002 reply form (Piranha send_arp)", "198.18.5.100", garp.ARP_REPLY, MAC),
    ("another VIP", "10.255.0.1", garp.ARP_REQUEST, "ff:ff:ff:ff:ff:ff"),
]


@pytest.mark.parametrize("desc,vip,op,hwdst", FORMS, ids=[f[0] for f in FORMS])
def test_matches_scapy(desc, vip, op, hwdst):
    expected = Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC) / ARP(
        op=op, hwsrc=MAC, psrc=vip, hwdst=hwdst, pdst=vip)
    assert garp.garp_frame(MAC, vip, op=op) == bytes(expected)


def test_keepalived_bytes_layout():
    # spec §4.1 [LAB]: ffffffffffff <mac> 0806 0001 0800 06 04 0001 <mac> <vip> ffffffffffff <vip>
    vip = bytes([198, 18, 5, 100])
    expected = (b"\xff" * 6 + MAC_BYTES + bytes.fromhex("0806 0001 0800 06 04 0001")
                + MAC_BYTES + vip + b"\xff" * 6 + vip)
    frame = garp.garp_frame(MAC_BYTES, "198.18.5.100")
    assert frame == expected and len(frame) == garp.FRAME_LEN == 42


def test_scapy_dissects_it_as_gratuitous():
    arp = Ether(garp.garp_frame(MAC, "198.18.5.100"))[ARP]
    assert arp.psrc == arp.pdst == "198.18.5.100"
    assert arp.hwsrc == MAC and arp.op == 1


def test_padding_to_60_bytes_like_send_arp():
    frame = garp.garp_frame(MAC, "198.18.5.100", op=garp.ARP_REPLY, pad=True)
    assert len(frame) == 60 and frame[42:] == bytes(18)
    assert frame[:42] == garp.garp_frame(MAC, "198.18.5.100", op=garp.ARP_REPLY)


def test_one_frame_per_vip_in_order():
    frames = garp.garp_frames(MAC, ["10.0.0.1", "10.0.0.2"])
    assert [Ether(f)[ARP].psrc for f in frames] == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52:54:00:12:34:56:78", "zz:54:00:12:34:56",
                                 "525400123456", b"\x00" * 5, "52:54:00:12:34:567"])
def test_bad_macs(mac):
    with pytest.raises(ValueError):
        garp.garp_frame(mac, "10.0.0.1")


def test_mac_forms():
    assert garp.parse_mac("52-54-00-12-34-56") == MAC_BYTES == garp.parse_mac(MAC.upper())


def test_bad_op_and_vip():
    with pytest.raises(ValueError):
        garp.garp_frame(MAC, "10.0.0.1", op=3)
    with pytest.raises(ValueError):
        garp.garp_frame(MAC, "10.0.0.256")


def test_vrrp_virtual_mac():
    assert garp.vrrp_virtual_mac(51) == bytes.fromhex("00005e000133")
    with pytest.raises(ValueError):
        garp.vrrp_virtual_mac(0)
