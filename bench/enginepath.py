"""Packet-path bench: Engine.process against a pure-Python per-packet NAT forwarder.

What it does: opens `flows` TCP connections through an Engine (SYN, SYN-ACK,
then ACK, built with scapy beforehand), copies the resulting connections into
`PyForwarder`, and times both on the same established-flow packets, half
client → VIP (DNAT) and half real server → client (SNAT), 92-byte IP packets
drawn at random from the flows. PyForwarder does, per packet, what the engine
does for those packets: IPv4 header checks including the header checksum, a dict
lookup of the IN then the OUT 5-tuple, IPVS's TCP state transition with its
timeout and counters, and the address/port rewrite with RFC 1624 incremental
checksums, using struct only. The first batch of each comparison must come out
byte for byte the same from both. Reports µs per packet at batch sizes 1, 8,
64 and 256 (the TUN read batch) and the ratio; writes engine.json and engine.png.

What it does not do: touch a TUN or a socket (spec/perf.md measures those: the
syscalls cost 3+ µs per packet whatever the engine does), schedule new flows
(sched bench), or use scapy while timing.

Mirrors: spec/perf.md B5's "pure-Python incremental DNAT + checksums" (1.9 µs)
against "numpy vectorised rewrite, batch 1/8/64/256", now for the whole engine.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from userlb import tcpstate
from userlb.bench.harness import Budget, Panel, Prepared, Progress, compare, format_table
from userlb.bench.harness import metadata, write_json, write_plot
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService, int_to_ip

FLOWS = {"full": 1024, "smoke": 32}
BATCHES = {"full": (1, 8, 64, 256), "smoke": (1, 64)}
REPEAT = {"full": 15, "smoke": 3}
ROUND_PACKETS = 256        # a sample processes this many packets: 256 // batch batches
PAYLOAD_BYTES = 52         # 20 IP + 20 TCP + 52 = 92-byte packets, as in spec/perf.md
VIP, VPORT, RPORT = "198.18.1.100", 80, 8080
REALS = ("198.18.2.11", "198.18.2.12", "198.18.2.13", "198.18.2.14")
NOW = 10.0

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TOTAL_FRAG = struct.Struct("!H2xH")       # total length, then flags + fragment offset
_ADDRS = struct.Struct("!II")
_PORTS = struct.Struct("!HH")
_IHL_WORDS = {ihl: struct.Struct(f"!{ihl // 2}H") for ihl in range(20, 61, 4)}


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


class PyForwarder:
    """The baseline: a per-packet LVS-NAT forwarder for established connections, struct only."""

    def __init__(self, engine: Engine) -> None:
        t = engine.table
        ids = t.live_ids().tolist()
        col = {n: getattr(t, n)[ids].tolist() for n in ("proto", "caddr", "cport", "vaddr",
                                                          "vport", "daddr", "dport", "state")}
        self.by_in = {(p, ca, cp, va, vp): i for i, p, ca, cp, va, vp in
                      zip(ids, col["proto"], col["caddr"], col["cport"], col["vaddr"], col["vport"])}
        self.by_out = {(p, da, dp, ca, cp): i for i, p, da, dp, ca, cp in
                       zip(ids, col["proto"], col["daddr"], col["dport"], col["caddr"], col["cport"])}
        n = t.capacity
        self.nat_in = dict(zip(ids, zip(col["daddr"], col["dport"])))
        self.nat_out = dict(zip(ids, zip(col["vaddr"], col["vport"])))
        self.state = dict(zip(ids, col["state"]))
        self.expires = [0.0] * n
        self.pkts = [0] * n
        self.bytes = [0] * n
        self.drops = 0
        self.transitions = tcpstate.TRANSITIONS[0].tolist()    # [dir][event][state]
        self.event = tcpstate.tcp_event(np.arange(256)).tolist()
        self.timeout = engine.timeout_of.tolist()

    def forward(self, p: bytearray, now: float) -> bool:
        """Rewrite one packet in place; False = drop."""
        n = len(p)
        if n < 20 or p[0] >> 4 != 4:
            return self._drop()
        ihl = (p[0] & 0x0F) << 2
        total, frag = _TOTAL_FRAG.unpack_from(p, 2)
        if ihl < 20 or total < ihl + 20 or total > n or frag & 0x3FFF or p[9] != 6:
            return self._drop()    # bad header, fragment or not TCP: the bench sends none
        if _fold(sum(_IHL_WORDS[ihl].unpack_from(p))) != 0xFFFF:
            return self._drop()
        saddr, daddr = _ADDRS.unpack_from(p, 12)
        sport, dport = _PORTS.unpack_from(p, ihl)
        key = (6, saddr, sport, daddr, dport)
        cid = self.by_in.get(key)
        if cid is not None:
            direction, addr_at, port_at = tcpstate.DIR_INPUT, 16, ihl + 2
            new_addr, new_port = self.nat_in[cid]
        else:
            cid = self.by_out.get(key)
            if cid is None:
                return True        # not ours: forwarded unchanged, as the engine does
            direction, addr_at, port_at = tcpstate.DIR_OUTPUT, 12, ihl
            new_addr, new_port = self.nat_out[cid]
        ev = self.event[p[ihl + 13]]
        state = tcpstate.CLOSE if ev < 0 else self.transitions[direction][ev][self.state[cid]]
        self.state[cid] = state
        self.expires[cid] = now + self.timeout[state]
        self.pkts[cid] += 1
        self.bytes[cid] += total
        old_addr = _U32.unpack_from(p, addr_at)[0]
        old_port = _U16.unpack_from(p, port_at)[0]
        # RFC 1624 eqn 3: HC' = ~(~HC + ~m + m'), m = the address words (+ the port for TCP)
        delta = ((~old_addr >> 16) & 0xFFFF) + (~old_addr & 0xFFFF) + (new_addr >> 16) \
            + (new_addr & 0xFFFF)
        ip_csum = ~_fold((~_U16.unpack_from(p, 10)[0] & 0xFFFF) + delta) & 0xFFFF
        l4_at = ihl + 16
        l4_csum = ~_fold((~_U16.unpack_from(p, l4_at)[0] & 0xFFFF) + delta
                         + (~old_port & 0xFFFF) + new_port) & 0xFFFF
        _U16.pack_into(p, 10, ip_csum)
        _U32.pack_into(p, addr_at, new_addr)
        _U16.pack_into(p, port_at, new_port)
        _U16.pack_into(p, l4_at, l4_csum)
        if total < n:
            del p[total:]
        return True

    def _drop(self) -> bool:
        self.drops += 1
        return False


def build_engine(flows: int, rng: np.random.Generator):
    """An Engine with `flows` ESTABLISHED connections; the in and out data frames of each."""
    from scapy.layers.inet import IP, TCP     # building frames only, never while timing

    reals = tuple(RealServer(a, RPORT) for a in REALS)
    engine = Engine([VirtualService("tcp", VIP, VPORT, "rr", reals)], table_size=2 * flows)
    clients = [(int_to_ip(0x0A000000 + int(a)), int(p)) for a, p in
               zip(rng.choice(2**20, flows, replace=False), rng.integers(1024, 65536, flows))]
    payload = bytes(PAYLOAD_BYTES)
    syns = [IP(src=c, dst=VIP) / TCP(sport=p, dport=VPORT, flags="S", seq=1000) for c, p in clients]
    _process(engine, [bytes(f) for f in syns])
    t = engine.table
    ids = t.lookup_in(6, [_ip(c) for c, _ in clients], [p for _, p in clients], _ip(VIP), VPORT)
    servers = [int_to_ip(int(a)) for a in t.daddr[ids]]
    data_in = [bytes(IP(src=c, dst=VIP) / TCP(sport=p, dport=VPORT, flags="PA", seq=1001,
                                              ack=5001) / payload) for c, p in clients]
    data_out = [bytes(IP(src=s, dst=c) / TCP(sport=RPORT, dport=p, flags="PA", seq=5001,
                                             ack=1001 + PAYLOAD_BYTES) / payload)
                for (c, p), s in zip(clients, servers)]
    synacks = [bytes(IP(src=s, dst=c) / TCP(sport=RPORT, dport=p, flags="SA", seq=5000, ack=1001))
               for (c, p), s in zip(clients, servers)]
    _process(engine, synacks)
    _process(engine, data_in)                  # the handshake's ACK carries data: ESTABLISHED
    if not (t.state[ids] == tcpstate.ESTABLISHED).all():
        raise RuntimeError("engine bench: handshakes did not reach ESTABLISHED")
    return engine, data_in + data_out


def _ip(addr: str) -> int:
    return int.from_bytes(bytes(int(x) for x in addr.split(".")), "big")


def _process(engine: Engine, frames: list[bytes], chunk: int = 256) -> None:
    for i in range(0, len(frames), chunk):
        engine.process(FrameBatch.from_frames(frames[i:i + chunk]), NOW)


def measure(engine: Engine, fwd: PyForwarder, frames: list[bytes], batch: int,
            rng: np.random.Generator, **kw):
    rounds = max(1, ROUND_PACKETS // batch)
    picks = rng.integers(0, len(frames), (rounds, batch))
    pristine = [[frames[i] for i in row] for row in picks.tolist()]
    batches = [FrameBatch(batch) for _ in range(rounds)]
    images = []
    for fb, row in zip(batches, pristine):
        for f in row:
            fb.append(f)
        images.append((fb.buf.copy(), fb.length.copy()))

    def refill():                      # untimed: NAT rewrote the rows in place
        for fb, (buf, length) in zip(batches, images):
            np.copyto(fb.buf, buf)
            np.copyto(fb.length, length)
            fb.count = batch

    def cand(_):
        return [(fb, engine.process(fb, NOW)) for fb in batches]

    def base(packets):
        forward = fwd.forward
        return [[p for p in row if forward(p, NOW)] for row in packets]

    def check(out_cand, out_base):
        got = [[fb.buf[r, :n].tobytes() for r, n in zip(v.rows.tolist(), v.lengths.tolist())]
               for fb, v in out_cand]
        want = [[bytes(p) for p in row] for row in out_base]
        if sum(map(len, want)) != rounds * batch:
            raise AssertionError("engine bench: PyForwarder dropped packets of live flows")
        if got != want:
            raise AssertionError("engine bench: Engine and PyForwarder wrote different bytes")

    return compare(Prepared(refill, cand),
                   Prepared(lambda: [[bytearray(f) for f in row] for row in pristine], base),
                   ops=rounds * batch, units="packet", check=check, **kw)


def run(mode: str = "full", max_seconds: float = 170.0, out_dir: Path | None = None,
        seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    batches = BATCHES[mode]
    progress = Progress("engine", len(batches))
    engine, frames = build_engine(FLOWS[mode], rng)
    fwd = PyForwarder(engine)
    progress.note(f"{FLOWS[mode]} established flows; {len(frames)} distinct data packets")
    budget = Budget(max_seconds)
    results = []
    for i, b in enumerate(batches):
        c = measure(engine, fwd, frames, b, rng, repeat=REPEAT[mode],
                    max_seconds=budget.share(len(batches) - i), name="process",
                    params={"batch": b, "flows": FLOWS[mode]})
        results.append(c)
        progress.step(f"batch={b:<4} engine {c.candidate.best_s * 1e6:8.2f} µs/pkt  "
                      f"python {c.baseline.best_s * 1e6:6.2f} µs/pkt  ratio {c.ratio:.3g}x")
    payload = {"bench": "engine", "meta": metadata(mode), "batches": list(batches),
               "flows": FLOWS[mode], "packet_bytes": 40 + PAYLOAD_BYTES,
               "checks": {"configurations": len(results),
                          "passed": sum(c.checked for c in results)},
               "results": [c.to_dict() for c in results],
               "summary": {"us_per_packet": {str(c.params["batch"]): c.candidate.best_s * 1e6
                                             for c in results},
                           "baseline_us_per_packet": {str(c.params["batch"]): c.baseline.best_s * 1e6
                                                      for c in results},
                           "ratio": {str(c.params["batch"]): c.ratio for c in results}}}
    print(render(payload))
    if out_dir is not None:
        xs = [c.params["batch"] for c in results]
        panels = [Panel("µs per packet", {"Engine.process": (xs, [c.candidate.best_s * 1e6 for c in results]),
                                          "PyForwarder": (xs, [c.baseline.best_s * 1e6 for c in results])},
                        unity=False),
                  Panel("speed-up (Python time / engine time)", {"ratio": (xs, [c.ratio for c in results])})]
        png = write_plot(Path(out_dir) / "engine.png", "packet path: established TCP, NAT both ways",
                         panels, xlabel="batch size (packets)", ylabel="")
        payload["files"] = {"json": str(Path(out_dir) / "engine.json"),
                            "png": None if png is None else str(png)}
        write_json(Path(out_dir) / "engine.json", payload)
    return payload


def render(payload: dict) -> str:
    rows = [[r["batch"], r["candidate"]["best_s_per_op"] * 1e6, r["baseline"]["best_s_per_op"] * 1e6,
             r["ratio"], r["ratio_median"]] for r in payload["results"]]
    table = format_table(["batch", "engine µs/pkt", "python µs/pkt", "ratio", "median"], rows)
    return (f"\nengine: Engine.process / PyForwarder, {payload['packet_bytes']}-byte TCP packets "
            f"of {payload['flows']} established flows (ratio > 1: engine faster)\n{table}\n")
