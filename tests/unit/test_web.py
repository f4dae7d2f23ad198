"""The web view's pure parts (webstate, webapi) and its HTTP edge over loopback.

State building from a real engine (counters, health, sampled packets with their
rewrite), routing, the bearer-token rule, weight requests, and the h11 server
answering real requests on 127.0.0.1 with a fake data path.
"""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP

from userlb import webapi, webstate
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService, int_to_ip
from userlb.trace import TraceHop
from userlb.web import WebServer

VIP, CLIENT = "198.18.1.100", "198.18.1.2"
RS = ["198.18.2.11", "198.18.2.12", "198.18.2.13"]
SERVICE = f"TCP {VIP}:80"


def engine(**kw) -> Engine:
    return Engine([VirtualService("tcp", VIP, 80, "rr", tuple(RealServer(a, 8080) for a in RS)),
                   VirtualService("tcp", "0.0.0.0", 0, "rr", (RealServer(RS[0], 0),), fwmark=7,
                                  match=(("tcp", "198.18.1.101", 443),))], table_size=64, **kw)


def run(eng: Engine, frames, now: float) -> None:
    eng.process(FrameBatch.from_frames([bytes(f) for f in frames]), now)


def handshake(eng: Engine, sport: int, now: float) -> None:
    run(eng, [IP(src=CLIENT, dst=VIP) / TCP(sport=sport, dport=80, flags="S")], now)
    t = eng.table
    conn = next(i for i in t.live_ids().tolist() if int(t.cport[i]) == sport)
    rs = int_to_ip(t.daddr[conn])
    run(eng, [IP(src=rs, dst=CLIENT) / TCP(sport=8080, dport=sport, flags="SA")], now + 0.001)


# -- webstate ---------------------------------------------------------------------------
def test_decode_and_sample_label_the_rewrite_both_ways():
    before = bytes(IP(src=CLIENT, dst=VIP) / TCP(sport=40312, dport=80, flags="S"))
    after = bytes(IP(src=CLIENT, dst=RS[0]) / TCP(sport=40312, dport=8080, flags="S"))
    s = webstate.sample(TraceHop(5, "in", 1.0, before, after), seq=9)
    assert s["label"] == f"S {CLIENT}:40312 → {VIP}:80 ⇒ {RS[0]}:8080"
    assert s["path"] == ["client", "router", "server"] and s["nat"] == "DNAT"
    assert (s["client"], s["server"], s["vip"], s["seq"]) == (f"{CLIENT}:40312", f"{RS[0]}:8080",
                                                              f"{VIP}:80", 9)
    reply = bytes(IP(src=RS[0], dst=CLIENT) / TCP(sport=8080, dport=40312, flags="SA"))
    snat = bytes(IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40312, flags="SA"))
    back = webstate.sample(TraceHop(5, "out", 1.1, reply, snat), seq=10)
    assert back["label"] == f"SA {RS[0]}:8080 → {CLIENT}:40312 ⇒ {VIP}:80 → {CLIENT}:40312"
    assert back["path"] == ["server", "router", "client"] and back["nat"] == "SNAT"
    assert webstate.decode(b"\x60" + bytes(39)) == {"proto": "?", "src": "?", "dst": "?"}


def test_harvest_takes_packets_after_the_cursor_and_prune_bounds_the_trace():
    hops = {c: [TraceHop(c, "in", c + k / 10, b"", b"") for k in range(3)] for c in range(5)}
    assert [h.time_s for h in webstate.harvest(hops, None)] == [4.0, 4.1, 4.2]
    assert [(h.conn, h.time_s) for h in webstate.harvest(hops, 3.05)] == [
        (3, 3.1), (3, 3.2), (4, 4.0), (4, 4.1), (4, 4.2)]
    assert len(webstate.harvest(hops, -1, per_connection=2)) == 10
    traced = np.zeros(8, bool)
    traced[0] = True                      # still traced (live): never pruned
    assert webstate.prune(hops, traced, keep=2) == 3
    assert sorted(hops) == [0, 4]


def test_peer_role_and_routers():
    assert webstate.peer_role("vrrp", "BACKUP", True) == "MASTER"
    assert webstate.peer_role("heartbeat", "MASTER", True) == "BACKUP"
    assert webstate.peer_role("heartbeat", "MASTER", False) == "down (silent)"
    assert webstate.peer_role("vrrp", "MASTER", False).startswith("unknown")
    assert webstate.peer_role("vrrp", "INIT", True) == "unknown"
    alone = webstate.routers(None, False, "198.18.1.1", None)
    assert alone == [{"name": "router", "address": "198.18.1.1", "role": "ACTIVE", "ha": None,
                      "self": True}]
    pair = webstate.routers({"state": "BACKUP", "protocol": "heartbeat", "primary": "198.18.1.252",
                             "priority": 100}, True, "198.18.1.252", "198.18.1.251")
    assert [(r["address"], r["role"]) for r in pair] == [("198.18.1.252", "BACKUP"),
                                                         ("198.18.1.251", "MASTER")]


def test_collect_and_build_state_from_an_engine():
    eng = engine(trace_connections=1)
    handshake(eng, 40000, 1.0)
    handshake(eng, 40001, 2.0)
    snap = webstate.collect(eng, 2.5, None, health_of=lambda s, r: "up" if s[0] == 6 else "down")
    web = snap["services"][0]
    assert (web["name"], web["scheduler"], web["vips"]) == (SERVICE, "rr", [VIP])
    assert snap["services"][1]["vips"] == ["198.18.1.101"] and snap["services"][1]["fwmark"] == 7
    assert sum(d["active"] + d["inactive"] for d in web["dests"]) == 2
    assert {d["health"] for d in web["dests"]} == {"up"}
    assert snap["clients"] == [{"address": CLIENT, "connections": 2}]
    assert [h.direction for h in snap.pop("hops")] == ["in", "out"]   # the traced first one
    samples = [webstate.sample(h, i) for i, h in enumerate(eng.trace.hops[0])]
    state = webstate.build_state(snap, samples, webstate.routers(None, False, "x", None), False)
    assert state["vips"] == [VIP, "198.18.1.101"] and state["connections"] == 2
    assert state["samples"][0]["label"].startswith(f"S {CLIENT}:40000 → {VIP}:80 ⇒ 198.18.2.1")
    json.dumps(state)                                                  # JSON-ready
    assert webstate.collect(eng, 3.0, 2.5)["hops"] == []


def test_set_weight_by_service_name():
    eng = engine()
    assert webstate.set_weight(eng, SERVICE, RS[1], 8080, 0) == 1
    rt = eng.services[0]
    assert [int(rt.dests.weight[rt.find(a, 8080)]) for a in RS] == [1, 0, 1]
    assert webstate.set_weight(eng, "FWM 7", RS[0], 0, 5) == 1
    with pytest.raises(KeyError):
        webstate.set_weight(eng, "TCP 1.2.3.4:80", RS[0], 8080, 1)
    with pytest.raises(KeyError):
        webstate.set_weight(eng, SERVICE, "198.18.2.99", 8080, 1)


# -- webapi -----------------------------------------------------------------------------
@pytest.mark.parametrize("method, target, expected", [
    ("GET", "/", webapi.Route("static", 200, "index.html")),
    ("GET", "/app.js?v=1", webapi.Route("static", 200, "app.js")),
    ("GET", "/api/state", webapi.Route("state")),
    ("POST", "/api/weight", webapi.Route("weight")),
    ("POST", "/api/state", webapi.Route(None, 405, "GET")),
    ("GET", "/api/weight", webapi.Route(None, 405, "POST")),
    ("DELETE", "/", webapi.Route(None, 405, "GET")),
    ("GET", "/../etc/passwd", webapi.Route(None, 404)),
    ("GET", "/webui/app.js", webapi.Route(None, 404)),
])
def test_route(method, target, expected):
    assert webapi.route(method, target) == expected


@pytest.mark.parametrize("token, header, expected", [
    ("", None, 403), ("", "Bearer anything", 403),
    ("s3cret-token-0123456", None, 401), ("s3cret-token-0123456", "Bearer wrong", 401),
    ("s3cret-token-0123456", "Basic s3cret-token-0123456", 401),
    ("s3cret-token-0123456", "Bearer s3cret-token-0123456", None),
    ("s3cret-token-0123456", "bearer  s3cret-token-0123456 ", None),
])
def test_authorize(token, header, expected):
    refused = webapi.authorize(token, header)
    assert (refused[0] if refused else None) == expected


def test_parse_weight():
    edit = webapi.parse_weight(b'{"service": "TCP 198.18.1.100:80", "server": "198.18.2.11:8080",'
                               b' "weight": 0}')
    assert edit == webapi.WeightEdit("TCP 198.18.1.100:80", "198.18.2.11", 8080, 0)
    for bad in (b"", b"[]", b'{"service": "x", "server": "a:1"}',
                b'{"service": "x", "server": "a:1", "weight": 65536}',
                b'{"service": "x", "server": "a:1", "weight": true}',
                b'{"service": "x", "server": "a:1", "weight": "3"}',
                b'{"service": "x", "server": "nope", "weight": 1}',
                b'{"service": 1, "server": "a:1", "weight": 1}'):
        with pytest.raises(ValueError):
            webapi.parse_weight(bad)


def test_error_responses_carry_their_headers():
    status, headers, body = webapi.error(401, "no")
    assert status == 401 and ("www-authenticate", 'Bearer realm="userlb"') in headers
    assert json.loads(body) == {"error": "no"}
    assert ("allow", "GET") in webapi.error(405, "m", allow="GET")[1]
    assert dict(webapi.response(200, b"x", "text/plain")[1])["x-content-type-options"] == "nosniff"


# -- the h11 edge on loopback -------------------------------------------------------------
async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def _serve(token: str, fn):
    eng = engine(trace_connections=1)
    handshake(eng, 40000, 1.0)

    async def call(f):
        return f(eng, 5.0)

    async def main():
        web = WebServer("127.0.0.1:0", token, call)
        await web.start()
        try:
            return await fn(web, web.server.sockets[0].getsockname()[1]), eng
        finally:
            await web.close()
    return asyncio.run(main())


def _status(reply: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]


def test_server_keeps_alive_serves_page_state_and_refuses_writes_without_token():
    async def go(web, port):
        return await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                     b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n"
                                     b"POST /api/weight HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                     b"Authorization: Bearer abc\r\n\r\n{}"
                                     b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply, _ = _serve("", go)
    assert _status(reply) == [200, 200, 403, 404]
    assert b"<svg id=\"figure\"" in reply and b'"routers":[{"name":"router"' in reply
    state = json.loads(reply.split(b"\r\n\r\n")[2].split(b"HTTP/1.1")[0])
    assert state["samples"][0]["label"].startswith(f"S {CLIENT}:40000 → {VIP}:80 ⇒ ")


def test_server_changes_a_weight_with_the_token():
    token = "t0ken-for-the-unit-test"
    body = json.dumps({"service": SERVICE, "server": f"{RS[2]}:8080", "weight": 0}).encode()

    async def go(web, port):
        req = (b"POST /api/weight HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
               b"Authorization: Bearer %s\r\nConnection: close\r\n\r\n" % (len(body),
                                                                           token.encode()))
        return [await _exchange(port, req + body),
                await _exchange(port, req.replace(token.encode(), b"x" * len(token)) + body)]
    (ok, wrong), eng = _serve(token, go)
    assert _status(ok) == [200] and json.loads(ok.split(b"\r\n\r\n")[1])["was"] == 1
    assert _status(wrong) == [401]
    assert int(eng.services[0].dests.weight[eng.services[0].find(RS[2], 8080)]) == 0


def test_server_rejects_garbage_and_oversized_bodies():
    async def go(web, port):
        return [await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n"),
                await _exchange(port, b"POST /api/weight HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                      b"99999\r\n\r\n" + b"x" * 99999)]
    (garbage, big), _ = _serve("a-token-long-enough", go)
    assert _status(garbage) == [400] and _status(big) == [413]


# -- config ------------------------------------------------------------------------------
def test_web_config_keys_are_validated_like_metrics():
    from userlb.config import ConfigError, loads
    cfg = loads('[router]\nweb = "198.18.1.1:8080"\nweb_token = "0123456789abcdef"\n')
    assert (cfg.router.web, cfg.router.web_token) == ("198.18.1.1:8080", "0123456789abcdef")
    assert (loads("").router.web, loads("").router.web_token) == ("", "")
    for text, message in (('web = "localhost:80"', "router.web: 'localhost:80' is not an IPv4"),
                          ('web = "198.18.1.1:0"', "is not an IPv4 address:port"),
                          ('web_token = "short"', "router.web_token: must be empty or at least 16"),
                          ('web_token = "with a space inside!"', "without spaces"),
                          ("web_token = 5", "router.web_token: must be a string")):
        with pytest.raises(ConfigError) as info:
            loads(f"[router]\n{text}\n", "lb.toml")
        assert "lb.toml:2: " in str(info.value) and message in str(info.value), text


def test_the_token_is_never_echoed_by_reload_or_repr():
    from userlb.config import loads
    from userlb.configdiff import diff
    from userlb.reload import apply_changes
    old = loads('[router]\nweb_token = "first-secret-token-1"\n')
    new = loads('[router]\nweb_token = "second-secret-token-2"\n')
    lines = apply_changes(engine(), diff(old, new))
    assert lines == ["router.web_token: (hidden) → (hidden) needs a restart (not applied)"]
    assert "secret" not in repr(new) and "secret" not in repr(new.router)


def test_a_stuck_data_path_gives_503_and_a_bug_500():
    async def main(call):
        web = WebServer("127.0.0.1:0", "", call)
        await web.start()
        try:
            port = web.server.sockets[0].getsockname()[1]
            return await _exchange(port, b"GET /api/state HTTP/1.1\r\nHost: x\r\n"
                                         b"Connection: close\r\n\r\n")
        finally:
            await web.close()

    async def stuck(fn):
        raise asyncio.TimeoutError

    async def broken(fn):
        raise RuntimeError("bug")
    assert _status(asyncio.run(main(stuck))) == [503]
    assert _status(asyncio.run(main(broken))) == [500]
