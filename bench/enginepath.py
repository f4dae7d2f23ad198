"""Packet-path bench: Engine.process against a pure-Python per-packet NAT forwarder.

What it does: opens `flows` connections through an Engine (frames built with
scapy beforehand), copies them into `PyForwarder`, and times both on the same
established-flow packets, half client → VIP (DNAT) and half real server → client
(SNAT), drawn at random from the flows, in three workloads:
- tcp: 92-byte TCP packets (spec/perf.md's small-packet size);
- udp: 64-byte UDP datagrams (the loss-free rate target's size);
- offload: TUN offload (FrameBatch.vnet, every row flagged NEEDS_CSUM): 64,000-byte
  TCP super-packets client → VIP and 40-byte ACKs back, as a TSO bulk upload gives
  them, in 65,550-byte rows.
PyForwarder does, per packet, what the engine does for those packets: IPv4 header
checks including the header checksum, a dict lookup of the IN then the OUT
5-tuple, IPVS's TCP (or UDP) state transition with its timeout and counters, and
the address/port rewrite with RFC 1624 incremental checksums (the CHECKSUM_PARTIAL
rule for flagged rows), using struct only. The first batch of each comparison
must come out byte for byte the same from both. Reports µs per packet at batch
sizes 1, 8, 64 and 256 (the TUN read batch) and the ratio; writes engine.json and
engine.png.

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
from userlb.frames import OFFLOAD_SNAPLEN, VNET_F_NEEDS_CSUM, FrameBatch
from userlb.services import RealServer, VirtualService, int_to_ip

FLOWS = {"full": 1024, "smoke": 32}
BATCHES = {"full": (1, 8, 64, 256), "smoke": (1, 64)}
REPEAT = {"full": 15, "smoke": 3}
WORKLOADS = ("tcp", "udp", "offload")
ROUND_PACKETS = 256        # a sample processes this many packets: 256 // batch batches
PAYLOAD_BYTES = 52         # 20 IP + 20 TCP + 52 = 92-byte packets, as in spec/perf.md
UDP_PAYLOAD_BYTES = 36     # 20 IP + 8 UDP + 36 = 64-byte datagrams
SUPER_PAYLOAD_BYTES = 63960   # 20 IP + 20 TCP + 63,960 = 64,000-byte super-packets
VIP, VPORT, RPORT = "198.18.1.100", 80, 8080
REALS = ("198.18.2.11", "198.18.2.12", "198.18.2.13", "198.18.2.14")
NOW = 10.0

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TOTAL_FRAG = struct.Struct("!H2xH")       # total length, then flags + fragment offset
_ADDRS = struct.Struct("!II")
_PORTS = struct.Struct("!HH")
_IHL_WORDS = {ihl: struct.Struct(f"!{ihl // 2}H") for ihl in range(20, 61, 4)}
_L4_MIN = {6: 20, 17: 8}                   # TCP, UDP header bytes
_CSUM_AT = {6: 16, 17: 6}                  # checksum offset in the L4 header


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

    def forward(self, p: bytearray, now: float, partial: bool = False) -> bool:
        """Rewrite one packet in place; False = drop. `partial`: the row is flagged
        NEEDS_CSUM, its L4 checksum field holds the uncomplemented pseudo-header sum."""
        n = len(p)
        if n < 20 or p[0] >> 4 != 4:
            return self._drop()
        ihl = (p[0] & 0x0F) << 2
        total, frag = _TOTAL_FRAG.unpack_from(p, 2)
        proto = p[9]
        if ihl < 20 or proto not in _L4_MIN or total < ihl + _L4_MIN[proto] or total > n \
                or frag & 0x3FFF:
            return self._drop()    # bad header, fragment or not TCP/UDP: the bench sends none
        if _fold(sum(_IHL_WORDS[ihl].unpack_from(p))) != 0xFFFF:
            return self._drop()
        saddr, daddr = _ADDRS.unpack_from(p, 12)
        sport, dport = _PORTS.unpack_from(p, ihl)
        key = (proto, saddr, sport, daddr, dport)
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
        if proto == 6:
            ev = self.event[p[ihl + 13]]
            state = tcpstate.CLOSE if ev < 0 else self.transitions[direction][ev][self.state[cid]]
        else:
            state = tcpstate.UDP
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
        l4_at = ihl + _CSUM_AT[proto]
        if partial:        # P' = fold(P + ~old + new) over the address; the port is not in P
            l4_csum = _fold(_U16.unpack_from(p, l4_at)[0] + delta)
        else:
            l4_csum = ~_fold((~_U16.unpack_from(p, l4_at)[0] & 0xFFFF) + delta
                             + (~old_port & 0xFFFF) + new_port) & 0xFFFF
            if proto == 17 and l4_csum == 0:
                l4_csum = 0xFFFF                  # RFC 768: 0 goes as all ones
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


def build_engine(flows: int, rng: np.random.Generator, workload: str = "tcp"):
    """An Engine with `flows` established connections; the in and out data frames of each."""
    from scapy.layers.inet import IP, TCP, UDP     # building frames only, never while timing

    proto = "udp" if workload == "udp" else "tcp"
    reals = tuple(RealServer(a, RPORT) for a in REALS)
    engine = Engine([VirtualService(proto, VIP, VPORT, "rr", reals)], table_size=2 * flows)
    clients = [(int_to_ip(0x0A000000 + int(a)), int(p)) for a, p in
               zip(rng.choice(2**20, flows, replace=False), rng.integers(1024, 65536, flows))]
    t = engine.table
    if workload == "udp":
        payload = bytes(UDP_PAYLOAD_BYTES)
        data_in = [bytes(IP(src=c, dst=VIP) / UDP(sport=p, dport=VPORT) / payload)
                   for c, p in clients]
        _process(engine, data_in)                 # the first datagram opens the connection
        ids = t.lookup_in(17, [_ip(c) for c, _ in clients], [p for _, p in clients], _ip(VIP),
                          VPORT)
        if not ((ids >= 0).all() and (t.state[ids] == tcpstate.UDP).all()):
            raise RuntimeError("engine bench: UDP flows did not open")
        servers = [int_to_ip(int(a)) for a in t.daddr[ids]]
        data_out = [bytes(IP(src=s, dst=c) / UDP(sport=RPORT, dport=p) / payload)
                    for (c, p), s in zip(clients, servers)]
        return engine, data_in + data_out
    payload = bytes(SUPER_PAYLOAD_BYTES if workload == "offload" else PAYLOAD_BYTES)
    syns = [IP(src=c, dst=VIP) / TCP(sport=p, dport=VPORT, flags="S", seq=1000) for c, p in clients]
    _process(engine, [bytes(f) for f in syns])
    ids = t.lookup_in(6, [_ip(c) for c, _ in clients], [p for _, p in clients], _ip(VIP), VPORT)
    servers = [int_to_ip(int(a)) for a in t.daddr[ids]]
    synacks = [bytes(IP(src=s, dst=c) / TCP(sport=RPORT, dport=p, flags="SA", seq=5000, ack=1001))
               for (c, p), s in zip(clients, servers)]
    _process(engine, synacks)
    acks = [bytes(IP(src=c, dst=VIP) / TCP(sport=p, dport=VPORT, flags="A", seq=1001, ack=5001))
            for c, p in clients]
    _process(engine, acks)
    if not (t.state[ids] == tcpstate.ESTABLISHED).all():
        raise RuntimeError("engine bench: handshakes did not reach ESTABLISHED")
    data_in = [bytes(IP(src=c, dst=VIP) / TCP(sport=p, dport=VPORT, flags="PA", seq=1001,
                                              ack=5001) / payload) for c, p in clients]
    if workload == "offload":      # the server only acknowledges
        data_out = [bytes(IP(src=s, dst=c) / TCP(sport=RPORT, dport=p, flags="A", seq=5001,
                                                 ack=1001 + len(payload)))
                    for (c, p), s in zip(clients, servers)]
        data_in = [_partial(f) for f in data_in]
        data_out = [_partial(f) for f in data_out]
    else:
        data_out = [bytes(IP(src=s, dst=c) / TCP(sport=RPORT, dport=p, flags="PA", seq=5001,
                                                 ack=1001 + len(payload)) / payload)
                    for (c, p), s in zip(clients, servers)]
    return engine, data_in + data_out


def _partial(frame: bytes) -> bytes:
    """The frame as a NEEDS_CSUM read hands it over: the L4 checksum field holds the folded
    pseudo-header sum (addresses, protocol, L4 length), not the complemented full sum."""
    ihl = (frame[0] & 0x0F) << 2
    total = _U16.unpack_from(frame, 2)[0]
    at = ihl + _CSUM_AT[frame[9]]
    pseudo = _fold(sum(struct.unpack_from("!4H", frame, 12)) + frame[9] + total - ihl)
    return frame[:at] + _U16.pack(pseudo) + frame[at + 2:]


def _ip(addr: str) -> int:
    return int.from_bytes(bytes(int(x) for x in addr.split(".")), "big")


def _process(engine: Engine, frames: list[bytes], chunk: int = 256) -> None:
    for i in range(0, len(frames), chunk):
        engine.process(FrameBatch.from_frames(frames[i:i + chunk]), NOW)


def measure(engine: Engine, fwd: PyForwarder, frames: list[bytes], batch: int,
            rng: np.random.Generator, offload: bool = False, **kw):
    rounds = max(1, ROUND_PACKETS // batch)
    picks = rng.integers(0, len(frames), (rounds, batch))
    pristine = [[frames[i] for i in row] for row in picks.tolist()]
    if offload:
        batches = [FrameBatch(batch, OFFLOAD_SNAPLEN, vnet=True) for _ in range(rounds)]
    else:
        batches = [FrameBatch(batch) for _ in range(rounds)]
    images = []
    for fb, row in zip(batches, pristine):
        for f in row:
            fb.append(f)
        if offload:
            fb.vnet[:batch, 0] = VNET_F_NEEDS_CSUM
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
        return [[p for p in row if forward(p, NOW, offload)] for row in packets]

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
    cases = len(WORKLOADS) * len(batches)
    progress = Progress("engine", cases)
    budget = Budget(max_seconds)
    results = []
    for workload in WORKLOADS:
        engine, frames = build_engine(FLOWS[mode], rng, workload)
        fwd = PyForwarder(engine)
        progress.note(f"{workload}: {FLOWS[mode]} established flows; {len(frames)} distinct "
                      f"data packets")
        for b in batches:
            c = measure(engine, fwd, frames, b, rng, offload=workload == "offload",
                        repeat=REPEAT[mode], max_seconds=budget.share(cases - len(results)),
                        name="process",
                        params={"workload": workload, "batch": b, "flows": FLOWS[mode]})
            results.append(c)
            progress.step(f"{workload:<7} batch={b:<4} engine {c.candidate.best_s * 1e6:8.2f} "
                          f"µs/pkt  python {c.baseline.best_s * 1e6:6.2f} µs/pkt  "
                          f"ratio {c.ratio:.3g}x")

    def per_batch(workload: str, value) -> dict:
        return {str(c.params["batch"]): value(c) for c in results
                if c.params["workload"] == workload}

    summary = {w: {"us_per_packet": per_batch(w, lambda c: c.candidate.best_s * 1e6),
                   "baseline_us_per_packet": per_batch(w, lambda c: c.baseline.best_s * 1e6),
                   "ratio": per_batch(w, lambda c: c.ratio)} for w in WORKLOADS}
    payload = {"bench": "engine", "meta": metadata(mode), "batches": list(batches),
               "workloads": list(WORKLOADS), "flows": FLOWS[mode],
               "packet_bytes": {"tcp": 40 + PAYLOAD_BYTES, "udp": 28 + UDP_PAYLOAD_BYTES,
                                "offload": [40 + SUPER_PAYLOAD_BYTES, 40]},
               "checks": {"configurations": len(results),
                          "passed": sum(c.checked for c in results)},
               "results": [c.to_dict() for c in results],
               "summary": {**summary["tcp"], "workloads": summary}}
    print(render(payload))
    if out_dir is not None:
        xs = list(batches)
        series = {w: [c for c in results if c.params["workload"] == w] for w in WORKLOADS}
        panels = [Panel("µs per packet",
                        {**{f"Engine.process {w}": (xs, [c.candidate.best_s * 1e6 for c in cs])
                            for w, cs in series.items()},
                         **{f"PyForwarder {w}": (xs, [c.baseline.best_s * 1e6 for c in cs])
                            for w, cs in series.items()}}, unity=False),
                  Panel("speed-up (Python time / engine time)",
                        {w: (xs, [c.ratio for c in cs]) for w, cs in series.items()})]
        png = write_plot(Path(out_dir) / "engine.png",
                         "packet path: established flows, NAT both ways", panels,
                         xlabel="batch size (packets)", ylabel="")
        payload["files"] = {"json": str(Path(out_dir) / "engine.json"),
                            "png": None if png is None else str(png)}
        write_json(Path(out_dir) / "engine.json", payload)
    return payload


def render(payload: dict) -> str:
    rows = [[r["workload"], r["batch"], r["candidate"]["best_s_per_op"] * 1e6,
             r["baseline"]["best_s_per_op"] * 1e6, r["ratio"], r["ratio_median"]]
            for r in payload["results"]]
    table = format_table(["workload", "batch", "engine µs/pkt", "python µs/pkt", "ratio",
                          "median"], rows)
    return (f"\nengine: Engine.process / PyForwarder on packets of {payload['flows']} "
            f"established flows, NAT both ways (ratio > 1: engine faster); tcp 92-byte "
            f"packets, udp 64-byte datagrams, offload 64,000-byte TCP super-packets in and "
            f"40-byte ACKs out, NEEDS_CSUM\n{table}\n")
