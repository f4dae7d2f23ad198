"""bench/cfwd.c's NAT rewrite against scapy's checksums (spec/perf.md checked every variant so).

cfwd.c is compiled as a shared library with `static` defined away, so its parse_args()
and nat() can be called through ctypes on packets built with scapy: DNAT and SNAT of
TCP and UDP with full checksums, and the virtio NEEDS_CSUM case, where the L4 field
holds the uncomplemented pseudo-header sum and only address changes touch it.
"""

from __future__ import annotations

import ctypes
import random
import shutil
import socket
import struct
import subprocess

import pytest
from scapy.all import IP, TCP, UDP, Raw

from userlb.bench.pathlab import CFWD_SOURCE

VIP = "198.18.1.100"
SERVERS = ("198.18.2.11", "198.18.2.12", "198.18.2.13")


@pytest.fixture(scope="module")
def cfwd(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    lib = tmp_path_factory.mktemp("cfwd") / "libcfwd.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Dstatic=", "-Dmain=cfwd_main",
                    "-o", str(lib), str(CFWD_SOURCE)], check=True)
    dll = ctypes.CDLL(str(lib))
    args = [b"cfwd", b"ulb0", VIP.encode(), ",".join(SERVERS).encode(), b"80:8080:c",
            b"5201:5201:s"]
    dll.parse_args(len(args), (ctypes.c_char_p * len(args))(*args))
    return dll


def nat(dll, raw: bytes, partial: int = 0) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(raw, len(raw))
    return dll.nat(buf, len(raw), partial), buf.raw


def checksums_ok(raw: bytes) -> bool:
    pkt = IP(raw)
    ip_sum, l4_sum = pkt.chksum, pkt.payload.chksum
    del pkt.chksum
    del pkt.payload.chksum
    again = IP(bytes(pkt))
    return (ip_sum, l4_sum) == (again.chksum, again.payload.chksum)


@pytest.mark.parametrize("l4, vport, rport", [(TCP, 80, 8080), (UDP, 5201, 5201),
                                              (TCP, 5201, 5201)])
def test_dnat_then_snat_keeps_checksums_right(cfwd, l4, vport, rport):
    rng = random.Random(vport)
    for i in range(200):
        sport = rng.randrange(1024, 65536)
        client = f"198.18.1.{rng.randrange(2, 5)}"
        pkt = IP(src=client, dst=VIP, id=i) / l4(sport=sport, dport=vport) / Raw(bytes(i % 61))
        verdict, out = nat(cfwd, bytes(pkt))
        fwd = IP(out)
        assert verdict == 1 and fwd.dst in SERVERS and fwd.payload.dport == rport
        assert checksums_ok(out)
        reply = IP(src=fwd.dst, dst=client) / l4(sport=rport, dport=sport) / Raw(b"r" * (i % 7))
        verdict, out = nat(cfwd, bytes(reply))
        back = IP(out)
        assert verdict == 1 and (back.src, back.payload.sport) == (VIP, vport)
        assert checksums_ok(out)


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    words = struct.unpack("!4H", socket.inet_aton(src) + socket.inet_aton(dst))
    total = sum(words) + proto + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_needs_csum_packet_gets_the_new_pseudo_header_sum(cfwd):
    raw = bytearray(bytes(IP(src="198.18.1.2", dst=VIP) / TCP(sport=1234, dport=80)
                          / Raw(b"y" * 100)))
    struct.pack_into("!H", raw, 36, pseudo_sum("198.18.1.2", VIP, 6, len(raw) - 20))
    verdict, out = nat(cfwd, bytes(raw), partial=1)
    fwd = IP(out)
    assert verdict == 1 and fwd.dport == 8080
    assert struct.unpack_from("!H", out, 36)[0] == pseudo_sum(fwd.src, fwd.dst, 6, len(raw) - 20)


def test_packets_not_for_a_service_are_dropped(cfwd):
    for pkt in (IP(src="198.18.1.2", dst=VIP) / TCP(dport=22),
                IP(src="198.18.1.2", dst="198.18.2.11") / UDP(dport=5201),
                IP(src="198.18.1.2", dst=VIP, frag=3) / UDP(dport=5201)):
        assert nat(cfwd, bytes(pkt))[0] == 0
