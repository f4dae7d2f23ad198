"""Annotated pcapng of a traced connection: valid for scapy and for Debian's tshark."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from userlb import pcapng, trace
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService

VIP, CLIENT, RS = "198.18.1.100", "198.18.1.2", "198.18.2.11"


def traced_hops() -> list[trace.TraceHop]:
    eng = Engine([VirtualService("tcp", VIP, 80, "rr", (RealServer(RS, 8080),))],
                 trace_connections=1)
    frames = [IP(src=CLIENT, dst=VIP) / TCP(sport=4000, dport=80, flags="S"),
              IP(src=RS, dst=CLIENT) / TCP(sport=8080, dport=4000, flags="SA"),
              IP(src=CLIENT, dst=VIP) / TCP(sport=4000, dport=80, flags="A")]
    for i, f in enumerate(frames):
        eng.process(FrameBatch.from_frames([bytes(f)]), float(i))
    return [h for hops in eng.trace.hops.values() for h in hops]


def test_pcapng_round_trips_through_scapy(tmp_path):
    hops = traced_hops()
    path = tmp_path / "flow.pcapng"
    path.write_bytes(trace.to_pcapng(hops, epoch_s=1_700_000_000))
    packets = rdpcap(str(path))
    assert len(packets) == 6
    assert [bytes(p) for p in packets] == [b for h in hops for b in (h.before, h.after)]
    assert IP(bytes(packets[1])).dst == RS and IP(bytes(packets[3])).src == VIP
    assert "DNAT 198.18.1.2:4000 > 198.18.1.100:80 becomes 198.18.1.2:4000 > 198.18.2.11:8080" \
        in packets[0].comment.decode()


def test_block_layout_is_padded_and_length_framed():
    data = pcapng.write(["x"], [pcapng.Packet(0, 1.5, b"\x45" * 21, "c")])
    offset, blocks = 0, []
    while offset < len(data):
        kind, length = int.from_bytes(data[offset:offset + 4], "little"), \
            int.from_bytes(data[offset + 4:offset + 8], "little")
        assert length % 4 == 0
        assert data[offset + length - 4:offset + length] == data[offset + 4:offset + 8]
        blocks.append(kind)
        offset += length
    assert blocks == [pcapng.SHB, pcapng.IDB, pcapng.EPB] and offset == len(data)


def test_tshark_reads_packets_and_comments(tmp_path):
    if not shutil.which("tshark"):
        if os.environ.get("CI"):
            pytest.fail("CI must run this test: ./dev installs Debian's tshark")
        pytest.skip("needs Debian's tshark (./dev installs it)")
    path = tmp_path / "flow.pcapng"
    path.write_bytes(trace.to_pcapng(traced_hops(), epoch_s=1_700_000_000))
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "ip.src", "-e",
                          "ip.dst", "-e", "tcp.flags.str", "-e", "frame.comment",
                          "-o", "tcp.check_checksum:TRUE", "-e", "tcp.checksum.status"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("\t") for line in out.strip().splitlines()]
    assert [(r[0], r[1]) for r in rows] == [(CLIENT, VIP), (CLIENT, RS), (RS, CLIENT),
                                            (VIP, CLIENT), (CLIENT, VIP), (CLIENT, RS)]
    assert all("userlb conn" in r[3] for r in rows)
    assert {r[4] for r in rows} == {"1"}          # tshark: 1 = Good checksum (0 Bad, 2 Unverified)
