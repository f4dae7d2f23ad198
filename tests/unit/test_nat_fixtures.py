"""Run the katran-style packet fixtures through parse + nat/icmp; compare bytes exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.packets import FIXTURES, RPORT, VPORT, ADDRESSES, PacketFixture
from userlb import icmp, nat
from userlb.drops import DropReason
from userlb.frames import FrameBatch
from userlb.parse import parse_ipv4

RS_ADDR, VIP_ADDR = ADDRESSES["rs"], ADDRESSES["vip"]


def _run_one(fx: PacketFixture) -> tuple[DropReason, bytes | None]:
    """Process one fixture as the engine would; returns (verdict, bytes written or None)."""
    batch = FrameBatch.from_frames([fx.input])
    headers = parse_ipv4(batch)
    drop = DropReason(int(headers.drop[0]))
    if drop != DropReason.OK:
        return drop, None
    rows = np.array([0])
    if fx.action == "dnat":
        nat.rewrite_dst(batch, rows, headers, np.array([RS_ADDR], np.uint32), np.array([RPORT], np.uint16))
    elif fx.action == "snat":
        nat.rewrite_src(batch, rows, headers, np.array([VIP_ADDR], np.uint32), np.array([VPORT], np.uint16))
    elif fx.action.startswith("icmp"):
        row, length, ihl = batch.buf[0], int(batch.length[0]), int(headers.ihl[0])
        quote = icmp.parse_error(row, length, ihl)
        if isinstance(quote, DropReason):
            return quote, None
        if fx.action == "icmp_from_client":
            icmp.rewrite_from_client(row, length, ihl, RS_ADDR, RPORT)
        else:
            icmp.rewrite_from_server(row, length, ihl, VIP_ADDR, VPORT)
    elif fx.action == "unreachable":
        return DropReason.NO_DEST, icmp.build_dest_unreachable(fx.input, VIP_ADDR)
    else:
        return DropReason.OK, None
    return DropReason.OK, batch.frame(0)


@pytest.mark.parametrize("fx", FIXTURES, ids=[f.description for f in FIXTURES])
def test_fixture(fx: PacketFixture) -> None:
    verdict, output = _run_one(fx)
    assert verdict == fx.verdict
    if fx.expected is None:
        assert output is None
    else:
        assert output is not None
        assert output.hex() == fx.expected.hex()


@pytest.mark.parametrize("action", ["dnat", "snat"])
def test_fixtures_batched(action: str) -> None:
    """All NAT fixtures of one direction in one batch (mixed TCP/UDP, IHLs, lengths, padding)."""
    chosen = [f for f in FIXTURES if f.action == action and f.expected is not None]
    # Interleave with rows that are dropped, which must stay untouched.
    junk = [f.input for f in FIXTURES if f.action == "parse"][:len(chosen)]
    frames = [x for pair in zip([f.input for f in chosen], junk) for x in pair]
    batch = FrameBatch.from_frames(frames)
    headers = parse_ipv4(batch)
    rows = np.flatnonzero(headers.ok)
    assert list(rows) == list(range(0, 2 * len(chosen), 2))
    if action == "dnat":
        nat.rewrite_dst(batch, rows, headers, np.full(len(rows), RS_ADDR, np.uint32),
                        np.full(len(rows), RPORT, np.uint16))
    else:
        nat.rewrite_src(batch, rows, headers, VIP_ADDR, VPORT)   # scalars broadcast
    for k, fx in enumerate(chosen):
        assert batch.frame(2 * k) == fx.expected, fx.description
        assert batch.frame(2 * k + 1) == junk[k][: batch.snaplen]


def test_empty_rows_is_a_no_op() -> None:
    batch = FrameBatch.from_frames([FIXTURES[0].input])
    before = batch.buf.copy()
    headers = parse_ipv4(batch)
    nat.rewrite_dst(batch, np.array([], np.intp), headers, np.array([], np.uint32), np.array([], np.uint16))
    assert np.array_equal(batch.buf, before)


def test_fixtures_both_ways_in_one_call() -> None:
    """nat.rewrite: the DNAT and SNAT fixtures interleaved in one batch, one call."""
    chosen = [f for f in FIXTURES if f.action in ("dnat", "snat") and f.expected is not None]
    batch = FrameBatch.from_frames([f.input for f in chosen])
    headers = parse_ipv4(batch)
    inbound = np.array([f.action == "dnat" for f in chosen])
    assert headers.ok.all() and inbound.any() and not inbound.all()
    nat.rewrite(batch, np.arange(len(chosen)), headers, inbound,
                np.where(inbound, RS_ADDR, VIP_ADDR).astype(np.uint32),
                np.where(inbound, RPORT, VPORT).astype(np.uint16))
    for k, fx in enumerate(chosen):
        assert batch.frame(k) == fx.expected, fx.description
