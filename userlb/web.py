"""EDGE: the web view: one static page and a JSON API, on the control plane's uvloop loop.

What it does: serves `webui/` (index.html, app.js, style.css: no framework, no CDN, no
build step) and `GET /api/state` (webstate.build_state: routers with their HA role, VIPs,
services, real servers with health, weight, counters and rates, drops, sampled packets)
and `POST /api/weight` (bearer token; read-only without one: webapi.authorize) over
HTTP/1.1 framed by h11, bound to the configured address only. Sampling costs nothing
while nobody watches: only while /api/state is being polled does the view ask the
engine, once a second, to trace the next new connection (trace_budget, as the control
command trace-next), and it reads the packets recorded since its last look. The state is
cached for STATE_CACHE_S, so many open pages cost the data path at most a few calls a
second.

What it does not do: decide (webapi, webstate), or write the engine except through
DataPath.call (the weight edit and the trace budget). Bounded: MAX_CONNECTIONS open
connections, requests of MAX_HEADER_BYTES + webapi.MAX_BODY_BYTES, IDLE_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path

import h11

from userlb import webapi, webstate

log = logging.getLogger("userlb.web")

WEBUI = Path(__file__).parent / "webui"
MAX_CONNECTIONS = 64
MAX_HEADER_BYTES = 16384
IDLE_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 5.0
STATE_CACHE_S = 0.4
SAMPLE_EVERY_S = 1.0        # one new traced connection per second while someone watches
WATCHING_S = 3.0            # a page that polled within this long counts as watching
PEER_HEARD_S = 3.0
SAMPLES_KEPT = 36


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WebServer:
    """`await start()`, `await close()`; `call(fn)` runs fn(engine, now) on the data path."""

    def __init__(self, endpoint: str, token: str, call, health=None, ha=None,
                 peer: str | None = None) -> None:
        self.host, _, port = endpoint.rpartition(":")
        self.port = int(port)
        self.token = token
        self.call = call
        self.health = health
        self.ha = ha
        self.peer = peer
        self.server: asyncio.AbstractServer | None = None
        self.static = {name: (WEBUI / name).read_bytes()
                       for name, _ in webapi.STATIC.values()}
        self.samples: deque = deque(maxlen=SAMPLES_KEPT)
        self._seq = 0
        self._since_s: float | None = None
        self._cached: tuple[float, dict] | None = None
        self._lock = asyncio.Lock()
        self._last_sample = -SAMPLE_EVERY_S
        self._adverts = (-1, -PEER_HEARD_S)      # (adverts_received seen, when it changed)
        self._open = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, self.host, self.port,
                                                 reuse_address=True)
        log.info("web view on http://%s:%d/ (%s)", self.host, self.port,
                 "weight changes need the token" if self.token else "read-only")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    # -- HTTP/1.1 with h11 --------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                try:
                    request = await self._read_request(conn, reader)
                    if request is None:
                        break
                    answer = await self._answer(request)
                except _HttpError as exc:
                    answer = webapi.error(exc.status, str(exc))
                except h11.RemoteProtocolError as exc:
                    answer = webapi.error(exc.error_status_hint, "bad request")
                if not await self._send(conn, writer, *answer):
                    break
                conn.start_next_cycle()
        except (ConnectionError, asyncio.TimeoutError, h11.ProtocolError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, conn: h11.Connection, reader) -> tuple | None:
        request, body = None, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT_S))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > webapi.MAX_BODY_BYTES:
                    raise _HttpError(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage):
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
                return request.method.decode(), request.target.decode("latin-1"), headers, \
                    bytes(body)
            else:                                   # ConnectionClosed, PAUSED
                return None

    async def _send(self, conn: h11.Connection, writer, status: int, headers: list,
                    body: bytes) -> bool:
        """Send one response; False when the connection must close afterwards."""
        if conn.our_state not in (h11.SEND_RESPONSE, h11.IDLE):   # IDLE: after a bad request line
            return False
        if conn.their_state is not h11.DONE:      # an error before the whole request was read
            headers = [*headers, ("connection", "close")]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    # -- the application ----------------------------------------------------------------
    async def _answer(self, request: tuple):
        try:
            return await self.dispatch(*request)
        except asyncio.TimeoutError:
            return webapi.error(503, "the data path did not answer in time")
        except Exception:                      # a bug must not take the server down
            log.exception("web: %s %s failed", request[0], request[1])
            return webapi.error(500, "internal error")

    async def dispatch(self, method: str, target: str, headers: dict, body: bytes):
        where = webapi.route(method, target)
        if where.handler is None:
            return webapi.error(where.status, "not found" if where.status == 404 else
                                "method not allowed", allow=where.detail)
        if where.handler == "static":
            ctype = next(t for n, t in webapi.STATIC.values() if n == where.detail)
            return webapi.response(200, self.static[where.detail], ctype)
        if where.handler == "state":
            return webapi.json_response(200, await self.state())
        refused = webapi.authorize(self.token, headers.get("authorization"))
        if refused is not None:
            return webapi.error(*refused)
        try:
            edit = webapi.parse_weight(body)
        except ValueError as exc:
            return webapi.error(400, str(exc))
        return await self.set_weight(edit)

    async def set_weight(self, edit: webapi.WeightEdit):
        try:
            old = await self._call(lambda engine, now: webstate.set_weight(
                engine, edit.service, edit.address, edit.port, edit.weight))
        except KeyError as exc:
            return webapi.error(404, str(exc.args[0]) if exc.args else "not found")
        self._cached = None
        log.info("web: weight of %s:%d in %s %d → %d", edit.address, edit.port, edit.service,
                 old, edit.weight)
        return webapi.json_response(200, {"service": edit.service, "weight": edit.weight,
                                          "server": f"{edit.address}:{edit.port}", "was": old})

    async def _call(self, fn):
        return await asyncio.wait_for(self.call(fn), CALL_TIMEOUT_S)

    async def state(self) -> dict:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._cached is not None and loop.time() - self._cached[0] < STATE_CACHE_S:
                return self._cached[1]
            sample = loop.time() - self._last_sample >= SAMPLE_EVERY_S
            if sample:
                self._last_sample = loop.time()
            since, health_of = self._since_s, (self.health.health_of if self.health else None)

            def look(engine, now):
                if sample and engine.trace_budget >= 0:   # as trace-next; never lowers it
                    engine.trace_budget = max(engine.trace_budget, 1)
                return webstate.collect(engine, now, since, health_of)

            snap = await self._call(look)
            self._since_s = snap["now_s"]
            for hop in snap.pop("hops"):
                self._seq += 1
                self.samples.append(webstate.sample(hop, self._seq))
            state = webstate.build_state(snap, list(self.samples), self._routers(loop),
                                         bool(self.token))
            self._cached = (loop.time(), state)
            return state

    def _routers(self, loop) -> list[dict]:
        """This router and its peer; the peer counts as heard while adverts keep arriving."""
        ha = self.ha.status() if self.ha is not None else None
        if ha is not None:
            heard = ha.get("counters", {}).get("adverts_received", 0)
            if heard != self._adverts[0]:          # (first look: any advert counts as recent)
                self._adverts = (heard, loop.time() if heard > 0 else -PEER_HEARD_S)
        recent = loop.time() - self._adverts[1] < PEER_HEARD_S
        return webstate.routers(ha, recent, self.host, self.peer)
