"""health.probes against real servers started here on 127.0.0.1, on asyncio's loop and on uvloop.

No sleeps stand in for waiting: servers pace their own replies, probes run with short timeouts,
and the only polling loop waits (bounded) for killed processes to disappear from /proc.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import stat
from pathlib import Path

import pytest
import uvloop

from userlb.health import ExternalCheck, HttpCheck, SendExpectCheck, TcpCheck
from userlb.health.probes import http_get, run_check, run_external, send_expect, tcp_connect

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BODY = b"<html>userlb health ok</html>\n"
BODY_MD5 = hashlib.md5(BODY).hexdigest()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """run(coro): run a coroutine to completion on a fresh loop of the parametrised kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro):
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(asyncio.wait_for(coro, 20))
    return runner


async def serve(handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    """Listen on 127.0.0.1 (any port); handlers cut short by the client or the loop's end stay quiet."""
    async def quiet(reader, writer):
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(quiet, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def close_at_once(reader, writer):
    writer.close()


def http_handler(status: str, body: bytes, seen: list | None = None, pieces: int = 1, gap_s: float = 0):
    """A one-shot HTTP server: read the request head, answer, close. Records request heads in `seen`."""
    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(head.decode())
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        step = max(1, len(body) // pieces)
        for i in range(0, len(body), step):
            writer.write(body[i:i + step])
            await writer.drain()
            if gap_s:
                await asyncio.sleep(gap_s)      # the server dribbles its reply
        writer.close()
    return handle


def free_port() -> int:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- TCP ------------------------------------------------------------------------------------------

def test_tcp_connect_up_and_refused(run):
    async def go():
        server, port = await serve(close_at_once)
        async with server:
            up = await tcp_connect("127.0.0.1", port, connect_timeout_s=1)
        down = await tcp_connect("127.0.0.1", free_port(), connect_timeout_s=1)
        return up, down
    up, down = run(go())
    assert up.ok and up.detail == "connected" and up.rtt_s >= 0
    assert not down.ok and "connect failed" in down.detail and "Refused" in down.detail


# -- HTTP -----------------------------------------------------------------------------------------

def test_http_500_fails_200_passes_with_host_header(run):
    async def go():
        seen = []
        bad, bad_port = await serve(http_handler("500 Internal Server Error", b"oops"))
        good, good_port = await serve(http_handler("200 OK", BODY, seen))
        async with bad, good:
            r500 = await http_get("127.0.0.1", bad_port, io_timeout_s=2)
            r200 = await http_get("127.0.0.1", good_port, path="/healthz", virtual_host="www.example.test")
            r10 = await http_get("127.0.0.1", good_port, http_version="1.0")
        return r500, r200, r10, seen
    r500, r200, r10, seen = run(go())
    assert not r500.ok and r500.detail == "status 500"
    assert r200.ok and r200.detail == "status 200"
    assert seen[0].startswith("GET /healthz HTTP/1.1\r\n") and "Host: www.example.test\r\n" in seen[0]
    assert r10.ok and seen[1].startswith("GET / HTTP/1.0\r\n") and f"Host: 127.0.0.1:" in seen[1]


def test_http_digest_match_and_mismatch(run):
    async def go():
        server, port = await serve(http_handler("200 OK", BODY, pieces=3))
        async with server:
            match = await http_get("127.0.0.1", port, digest_md5=BODY_MD5)
            mismatch = await http_get("127.0.0.1", port, digest_md5="0" * 32)
        return match, mismatch
    match, mismatch = run(go())
    assert match.ok and match.detail == "status 200, digest ok"
    assert not mismatch.ok and BODY_MD5 in mismatch.detail


def test_http_status_list_and_chunked_body(run):
    async def chunked(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 301 Moved\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
        writer.close()

    async def go():
        server, port = await serve(chunked)
        async with server:
            default = await http_get("127.0.0.1", port)
            listed = await http_get("127.0.0.1", port, status_codes=(200, 301), digest_md5=BODY_MD5)
        return default, listed
    default, listed = run(go())
    assert not default.ok and default.detail == "status 301"
    assert listed.ok


def test_http_timeout_covers_the_whole_response_not_each_read(run):
    """keepalived #1822: a reply dribbled slowly must fail once io_timeout_s has passed overall."""
    async def go():
        server, port = await serve(http_handler("200 OK", BODY, pieces=len(BODY), gap_s=0.02))
        async with server:
            return await http_get("127.0.0.1", port, io_timeout_s=0.3)
    result = run(go())                       # each read waits 0.02 s; the body needs ~0.6 s
    assert not result.ok and result.detail == "no complete response within 0.3 s"
    assert 0.29 <= result.rtt_s < 1.5


def test_http_garbage_and_early_close_fail_cleanly(run):
    async def garbage(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        writer.close()

    async def go():
        server, port = await serve(garbage)
        closer, closer_port = await serve(close_at_once)
        async with server, closer:
            return (await http_get("127.0.0.1", port), await http_get("127.0.0.1", closer_port),
                    await http_get("127.0.0.1", free_port()))
    bad, closed, refused = run(go())
    assert not bad.ok and bad.detail.startswith("bad response")
    assert not closed.ok and not refused.ok and "connect failed" in refused.detail


def test_https_get_without_verification_by_default(run):
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(FIXTURES / "health-tls.crt", FIXTURES / "health-tls.key")

    async def go():
        server, port = await serve(http_handler("200 OK", BODY), tls=tls)
        async with server:
            plain = await http_get("127.0.0.1", port, tls=True, digest_md5=BODY_MD5)
            verified = await http_get("127.0.0.1", port, tls=True, tls_verify=True)
            sni = await run_check(HttpCheck(tls=True, tls_sni=True, virtual_host="health.userlb.test"),
                                  "127.0.0.1", port)
        return plain, verified, sni
    plain, verified, sni = run(go())
    assert plain.ok and plain.detail == "status 200, digest ok"
    assert not verified.ok and "CERTIFICATE_VERIFY_FAILED" in verified.detail   # self-signed
    assert sni.ok


# -- send / expect --------------------------------------------------------------------------------

def test_send_expect_times_out_on_a_stalled_server(run):
    async def stall(reader, writer):
        await reader.read(100)
        await asyncio.sleep(30)                 # accepts, then never answers

    async def go():
        server, port = await serve(stall)
        async with server:
            result = await send_expect("127.0.0.1", port, send=b"PING\r\n", expect=b"PONG", io_timeout_s=0.3)
            server.close()
            return result
    result = run(go())
    assert not result.ok and result.detail.startswith("no match within 0.3 s")


def test_send_expect_matches_a_reply_in_two_slow_pieces(run):
    """nanny's single read() would see only "+OK rea" and fail; we read until the match."""
    async def slow(reader, writer):
        assert await reader.readuntil(b"\r\n") == b"HELLO\r\n"
        writer.write(b"+OK rea")
        await writer.drain()
        await asyncio.sleep(0.15)
        writer.write(b"dy\r\n")
        await writer.drain()
        writer.close()

    async def go():
        server, port = await serve(slow)
        async with server:
            plain = await send_expect("127.0.0.1", port, send=b"HELLO\r\n", expect=b"+OK ready", io_timeout_s=2)
            regex = await run_check(SendExpectCheck(send="HELLO\r\n", expect=r"^\+OK \w+dy\r\n$", regex=True,
                                                    io_timeout_s=2), "127.0.0.1", port)
            closed = await send_expect("127.0.0.1", port, send=b"HELLO\r\n", expect=b"-ERR", io_timeout_s=2)
        return plain, regex, closed
    plain, regex, closed = run(go())
    assert plain.ok and plain.rtt_s >= 0.14 and plain.detail == "matched after 11 bytes"
    assert regex.ok
    assert not closed.ok and closed.detail.startswith("closed before a match; got b'+OK ready")


def test_send_expect_refused(run):
    result = run(send_expect("127.0.0.1", free_port(), send=b"x", expect=b"y"))
    assert not result.ok and "connect failed" in result.detail


# -- external programs ----------------------------------------------------------------------------

def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_external_exit_codes(run, tmp_path):
    ok = script(tmp_path, "ok.sh", 'echo "alive on $1:$2"; exit 0')
    bad = script(tmp_path, "bad.sh", "echo broken; exit 1")
    dyn = script(tmp_path, "dyn.sh", "exit 7")

    async def go():
        return [await run_check(ExternalCheck(program=ok, args=("%h", "%p")), "10.0.0.5", 8080),
                await run_external([bad], timeout_s=5),
                await run_external([dyn], timeout_s=5, dynamic=True),
                await run_external([dyn], timeout_s=5),
                await run_external([bad], timeout_s=5, dynamic=True),
                await run_external([str(tmp_path / "missing")], timeout_s=5)]
    passed, failed, dynamic, not_dynamic, dynamic_fail, missing = run(go())
    assert passed.ok and passed.weight is None and passed.detail == "exit 0: alive on 10.0.0.5:8080"
    assert not failed.ok and failed.detail == "exit 1: broken"
    assert dynamic.ok and dynamic.weight == 5
    assert not not_dynamic.ok and not_dynamic.weight is None
    assert not dynamic_fail.ok and dynamic_fail.weight is None
    assert not missing.ok and missing.detail.startswith("cannot run")


def _gone(pid: int) -> bool:
    """True once pid has exited (absent, or a zombie awaiting its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_external_timeout_kills_the_whole_process_group(run, tmp_path):
    pids = tmp_path / "pids"
    hang = script(tmp_path, "hang.sh", f"sleep 30 & echo $$ $! > {pids}; wait")

    async def go():
        result = await run_external([hang], timeout_s=0.5, dynamic=True)
        for _ in range(200):                    # bounded wait for the kernel to finish the kill
            if all(_gone(int(p)) for p in pids.read_text().split()):
                break
            await asyncio.sleep(0.01)
        return result
    result = run(go())
    assert not result.ok and result.weight is None and result.detail == "timed out after 0.5 s; killed"
    assert 0.49 <= result.rtt_s < 3
    assert all(_gone(int(p)) for p in pids.read_text().split())


def test_cancelled_external_check_leaves_no_child(run, tmp_path):
    pids = tmp_path / "pids"
    hang = script(tmp_path, "hang.sh", f"echo $$ > {pids}; exec sleep 30")

    async def go():
        task = asyncio.create_task(run_external([hang], timeout_s=30))
        for _ in range(500):
            if pids.exists() and pids.read_text().strip():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pid = int(pids.read_text())
        for _ in range(200):
            if _gone(pid):
                break
            await asyncio.sleep(0.01)
        return pid
    assert _gone(run(go()))


def test_run_check_tcp_dispatch(run):
    async def go():
        server, port = await serve(close_at_once)
        async with server:
            return await run_check(TcpCheck(connect_timeout_s=1), "127.0.0.1", port)
    assert run(go()).ok


def test_no_leftover_children():
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_our_zombie(int(p))]


def _is_our_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] == "Z" and int(fields[1]) == os.getpid()
