"""health.runner against local servers: events arrive on a queue and tests wait for them with timeouts."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from userlb.health import (HealthChanged, HttpCheck, ProbeResult, QuorumChanged, ServiceHealth,
                           TcpCheck, real_key)
from userlb.health.runner import HealthRunner
from userlb.services import RealServer, VirtualService

FAST = dict(interval_s=0.05, delay_before_retry_s=0.05, connect_timeout_s=0.5, warmup_s=0.02)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro):
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(asyncio.wait_for(coro, 20))
    return runner


async def next_event(queue: asyncio.Queue, predicate, timeout_s: float = 5.0):
    """The first queued event that satisfies predicate (others are dropped); fails after timeout_s."""
    async def scan():
        while True:
            event = await queue.get()
            if predicate(event):
                return event
    return await asyncio.wait_for(scan(), timeout_s)


async def accept_and_close(reader, writer):
    writer.close()


async def listen(port: int = 0) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(accept_and_close, "127.0.0.1", port)
    return server, server.sockets[0].getsockname()[1]


def one_service(ports: list[int], check, **health) -> ServiceHealth:
    reals = tuple(RealServer("127.0.0.1", p, 1) for p in ports)
    vs = VirtualService("tcp", "198.18.0.100", 80, reals=reals)
    return ServiceHealth(service=vs, checks=((check,),) * len(reals), **health)


def test_server_stops_then_restarts(run):
    async def go():
        server, port = await listen()
        svc = one_service([port], TcpCheck(rise=2, fall=3, **FAST))
        events: asyncio.Queue = asyncio.Queue()
        is_real = lambda up: lambda e: isinstance(e, HealthChanged) and e.up is up
        async with HealthRunner([svc], events.put_nowait, seed=3) as runner:
            initial = await next_event(events, is_real(True))
            (cid,) = runner.policy.check_ids()
            server.close()
            await server.wait_closed()
            down = await next_event(events, is_real(False))
            fails = runner.policy.check_state(cid).fails
            server, _ = await listen(port)
            up = await next_event(events, is_real(True))
            passes = runner.policy.check_state(cid).passes
        server.close()
        assert not runner.running
        return initial, down, fails, up, passes
    initial, down, fails, up, passes = run(go())
    assert initial.reason == "initial state" and initial.weight == 1
    assert down.weight is None and "connect failed" in down.reason and "(3/3 failures, check down)" in down.reason
    assert fails == 3
    assert up.weight == 1 and "(2/2 passes, check up)" in up.reason and passes == 2


def test_http_quiesce_and_sorry_server(run):
    """Two HTTP servers turn to 500: quiesced one by one, then the sorry server comes in; and back."""
    status = {"code": "200 OK"}

    async def http(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.0 {status['code']}\r\n\r\nbody".encode())
        writer.close()

    async def go():
        servers = [await asyncio.start_server(http, "127.0.0.1", 0) for _ in range(2)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        sorry = RealServer("127.0.0.9", 80, 1)
        svc = one_service(ports, HttpCheck(path="/health", fall=1, io_timeout_s=0.5, **FAST),
                          on_failure="quiesce", sorry_server=sorry)
        events: asyncio.Queue = asyncio.Queue()
        async with HealthRunner([svc], events.put_nowait, emit_initial=False):
            status["code"] = "503 Service Unavailable"
            sorry_in = await next_event(events, lambda e: isinstance(e, HealthChanged)
                                        and e.real_key == real_key(sorry) and e.up)
            status["code"] = "200 OK"
            quorum = await next_event(events, lambda e: isinstance(e, QuorumChanged) and e.up)
        for s in servers:
            s.close()
        return sorry_in, quorum
    sorry_in, quorum = run(go())
    assert sorry_in.weight == 1 and quorum.live_weight >= 1


def test_staggered_start_bounded_concurrency_and_clean_stop():
    """A fake prober records start times and how many probes overlap; nothing runs after stop()."""
    async def go():
        loop = asyncio.get_running_loop()
        active, peak, starts = 0, 0, {}
        release, two_running, all_started = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def prober(check, host, port):
            nonlocal active, peak
            starts.setdefault(port, loop.time())
            active += 1
            peak = max(peak, active)
            if active == 2:
                two_running.set()
            if len(starts) == 6:
                all_started.set()
            await release.wait()
            active -= 1
            return ProbeResult(True, 0.0, "fake")

        svc = one_service(list(range(1001, 1007)), TcpCheck(interval_s=0.05, warmup_s=0.1))
        runner = HealthRunner([svc], lambda e: None, seed=11, max_concurrent=2, prober=prober)
        await runner.start()
        planned = {cid[1][1]: runner.policy.next_due(cid) for cid in runner.policy.check_ids()}
        await asyncio.wait_for(two_running.wait(), 5)
        # let every first run fall due: still only two probes may be running
        await asyncio.sleep(max(planned.values()) - loop.time() + 0.05)
        held = peak
        release.set()
        await asyncio.wait_for(all_started.wait(), 5)
        await runner.stop()
        return held, peak, starts, planned, active, runner.running
    held, peak, starts, planned, active, running = asyncio.run(asyncio.wait_for(go(), 10))
    assert held == 2 and peak <= 2 and active == 0 and not running
    assert len(set(round(t, 6) for t in planned.values())) == 6          # jittered, distinct
    first_two = sorted(planned, key=planned.get)[:2]
    assert sorted(starts, key=starts.get)[:2] == first_two
    assert all(starts[p] >= planned[p] - 1e-3 for p in first_two)
