"""EDGE: the probes. Each one touches the network or runs a program once and returns a ProbeResult.

What it does: tcp_connect, http_get (HTTP/1.0 or 1.1, HTTPS; h11 parses the response),
send_expect and run_external, plus run_check() that dispatches a spec.py check to them. Every
probe measures rtt_s with the running loop's clock and turns every error (refused, reset, DNS,
TLS, protocol, timeout, exec failure) into ok=False with a detail: a probe never raises, except
CancelledError, after which no child process is left behind. Works on asyncio's loop and uvloop.

What it does not do: count, retry or decide (policy.py), or schedule (runner.py).

Defects not copied (spec §9.5): send_expect reads until the match, EOF or the deadline instead of
nanny's single read; http_get's io_timeout_s bounds the whole response, not each read (keepalived
#1822); an external program that fails or times out never passes, whatever `expect` says.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import ssl
from typing import Protocol, Sequence

import h11

from userlb.health.spec import (Check, ExternalCheck, HttpCheck, ProbeResult, SendExpectCheck,
                                TcpCheck)

USER_AGENT = "userlb-health"
DEFAULT_STATUS_CODES = tuple(range(200, 300))
_STDOUT_KEEP_BYTES = 4096


class Prober(Protocol):
    """What the runner calls: probe `check` against host:port (tests may pass a fake)."""

    async def __call__(self, check: Check, host: str, port: int) -> ProbeResult: ...


def _elapsed(start: float) -> float:
    return asyncio.get_running_loop().time() - start


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _connect(host: str, port: int, timeout_s: float, **tls) -> tuple | str:
    """(reader, writer), or a failure detail."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.open_connection(host, port, **tls)
    except TimeoutError:
        return f"connect timeout after {timeout_s:g} s"
    except Exception as exc:            # refused, unreachable, DNS, TLS handshake, ...
        return f"connect failed: {_describe(exc)}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(1.0):    # not wait_for: on 3.11 it can swallow a cancellation
            await writer.wait_closed()
    except Exception:                   # reset by peer, TLS shutdown timeout: nothing to report
        pass


async def tcp_connect(host: str, port: int, *, connect_timeout_s: float = 5.0) -> ProbeResult:
    """Pass iff a TCP connection to host:port completes within connect_timeout_s (TCP_CHECK)."""
    start = asyncio.get_running_loop().time()
    conn = await _connect(host, port, connect_timeout_s)
    if isinstance(conn, str):
        return ProbeResult(False, _elapsed(start), conn)
    rtt_s = _elapsed(start)
    await _close(conn[1])
    return ProbeResult(True, rtt_s, "connected")


def tls_client_context(verify: bool) -> ssl.SSLContext:
    """Client context; without `verify` any certificate is accepted, as keepalived's SSL_GET."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _request_bytes(conn: h11.Connection, path: str, host_header: str, http_version: str) -> bytes:
    headers = [("Host", host_header), ("User-Agent", USER_AGENT), ("Connection", "close")]
    data = conn.send(h11.Request(method="GET", target=path, headers=headers))
    data += conn.send(h11.EndOfMessage())
    if http_version == "1.0":           # h11 only writes 1.1; it parses the reply to 1.0 alike
        lines = [f"GET {path} HTTP/1.0"] + [f"{k}: {v}" for k, v in headers]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data


async def _read_response(conn: h11.Connection, reader: asyncio.StreamReader,
                         status_codes: Sequence[int]) -> tuple[int, "hashlib._Hash | None"]:
    """Read until the end of the response; (status, md5 of the body), md5 None if the status is bad."""
    status, md5 = 0, hashlib.md5()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            if status not in status_codes:
                return status, None     # no need for the body
        elif isinstance(event, h11.Data):
            md5.update(event.data)
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, (md5 if status else None)


async def http_get(host: str, port: int, *, path: str = "/", virtual_host: str | None = None,
                   tls: bool = False, http_version: str = "1.1",
                   status_codes: Sequence[int] = DEFAULT_STATUS_CODES, digest_md5: str | None = None,
                   connect_timeout_s: float = 5.0, io_timeout_s: float = 5.0,
                   tls_verify: bool = False, tls_sni: bool = False) -> ProbeResult:
    """GET `path`; pass iff the status is in status_codes and the body's MD5 equals digest_md5 (if set)."""
    start = asyncio.get_running_loop().time()
    default_port = 443 if tls else 80
    host_header = virtual_host or (host if port == default_port else f"{host}:{port}")
    extra = {}
    if tls:
        sni = virtual_host or host
        extra = {"ssl": tls_client_context(tls_verify), "ssl_handshake_timeout": connect_timeout_s,
                 "server_hostname": sni if (tls_sni or tls_verify) else ""}
    conn = await _connect(host, port, connect_timeout_s, **extra)
    if isinstance(conn, str):
        return ProbeResult(False, _elapsed(start), conn)
    reader, writer = conn
    parser = h11.Connection(our_role=h11.CLIENT)
    try:
        async with asyncio.timeout(io_timeout_s):   # one deadline for the whole exchange (#1822)
            writer.write(_request_bytes(parser, path, host_header, http_version))
            await writer.drain()
            status, md5 = await _read_response(parser, reader, status_codes)
    except TimeoutError:
        return ProbeResult(False, _elapsed(start), f"no complete response within {io_timeout_s:g} s")
    except Exception as exc:            # reset, truncated body, malformed response
        return ProbeResult(False, _elapsed(start), f"bad response: {_describe(exc)}")
    finally:
        await _close(writer)
    rtt_s = _elapsed(start)
    if md5 is None:
        return ProbeResult(False, rtt_s, f"status {status}" if status else "closed without a response")
    if digest_md5 is not None and md5.hexdigest() != digest_md5:
        return ProbeResult(False, rtt_s, f"status {status}, body md5 {md5.hexdigest()} != {digest_md5}")
    return ProbeResult(True, rtt_s, f"status {status}" + (", digest ok" if digest_md5 else ""))


def _matcher(expect: bytes, regex: bool):
    if regex:
        pattern = re.compile(expect)
        return lambda data: pattern.search(data) is not None
    return lambda data: expect in data


async def send_expect(host: str, port: int, *, send: bytes = b"", expect: bytes = b"",
                      regex: bool = False, connect_timeout_s: float = 5.0, io_timeout_s: float = 5.0,
                      max_reply_bytes: int = 65536) -> ProbeResult:
    """Connect, write `send`, read until `expect` is found (text or regex) within io_timeout_s."""
    start = asyncio.get_running_loop().time()
    conn = await _connect(host, port, connect_timeout_s)
    if isinstance(conn, str):
        return ProbeResult(False, _elapsed(start), conn)
    reader, writer = conn
    matches, reply = _matcher(expect, regex), bytearray()
    try:
        async with asyncio.timeout(io_timeout_s):
            if send:
                writer.write(send)
                await writer.drain()
            while not matches(bytes(reply)):
                if len(reply) >= max_reply_bytes:
                    return ProbeResult(False, _elapsed(start), f"no match in the first {len(reply)} bytes")
                chunk = await reader.read(max_reply_bytes - len(reply))
                if not chunk:
                    return ProbeResult(False, _elapsed(start), f"closed before a match; got {bytes(reply[:80])!r}")
                reply += chunk
    except TimeoutError:
        return ProbeResult(False, _elapsed(start),
                           f"no match within {io_timeout_s:g} s; got {bytes(reply[:80])!r}")
    except Exception as exc:
        return ProbeResult(False, _elapsed(start), f"I/O failed: {_describe(exc)}")
    finally:
        await _close(writer)
    return ProbeResult(True, _elapsed(start), f"matched after {len(reply)} bytes")


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the program and everything it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _drain_stdout(proc: asyncio.subprocess.Process) -> bytes:
    head = await proc.stdout.read(_STDOUT_KEEP_BYTES)
    while await proc.stdout.read(65536):
        pass
    await proc.wait()
    return head


def _exit_verdict(code: int, stdout: bytes, dynamic: bool, rtt_s: float) -> ProbeResult:
    """MISC_CHECK: 0 passes; with misc_dynamic, 2..255 pass with weight code − 2; all else fails."""
    first_line = stdout.decode("utf-8", "replace").strip().splitlines()[:1]
    said = f": {first_line[0][:120]}" if first_line else ""
    if code == 0:
        return ProbeResult(True, rtt_s, f"exit 0{said}")
    if dynamic and 2 <= code <= 255:
        return ProbeResult(True, rtt_s, f"exit {code} → weight {code - 2}{said}", weight=code - 2)
    if code < 0:
        return ProbeResult(False, rtt_s, f"killed by signal {-code}{said}")
    return ProbeResult(False, rtt_s, f"exit {code}{said}")


async def run_external(argv: Sequence[str], *, timeout_s: float = 10.0,
                       dynamic: bool = False) -> ProbeResult:
    """Run argv (no shell) with stdin and stderr on /dev/null; kill its process group on timeout."""
    start = asyncio.get_running_loop().time()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    except Exception as exc:
        return ProbeResult(False, _elapsed(start), f"cannot run {argv[0]!r}: {_describe(exc)}")
    try:
        async with asyncio.timeout(timeout_s):
            stdout = await _drain_stdout(proc)
    except TimeoutError:
        _kill_group(proc)
        try:
            async with asyncio.timeout(2.0):
                await proc.wait()
        except TimeoutError:
            pass
        return ProbeResult(False, _elapsed(start), f"timed out after {timeout_s:g} s; killed")
    except BaseException:               # cancelled (runner stopping): leave no child behind
        _kill_group(proc)
        raise
    return _exit_verdict(proc.returncode, stdout, dynamic, _elapsed(start))


def external_argv(check: ExternalCheck, host: str, port: int) -> list[str]:
    """The program and its args with nanny's %h (address) and %p (port) substituted."""
    return [check.program] + [a.replace("%h", host).replace("%p", str(port)) for a in check.args]


async def run_check(check: Check, host: str, port: int) -> ProbeResult:
    """Run the probe `check` describes against host:port. Never raises (except CancelledError)."""
    try:
        if isinstance(check, TcpCheck):
            return await tcp_connect(host, port, connect_timeout_s=check.connect_timeout_s)
        if isinstance(check, HttpCheck):
            return await http_get(
                host, port, path=check.path, virtual_host=check.virtual_host, tls=check.tls,
                http_version=check.http_version, status_codes=check.status_codes,
                digest_md5=check.digest_md5, connect_timeout_s=check.connect_timeout_s,
                io_timeout_s=check.io_timeout_s, tls_verify=check.tls_verify, tls_sni=check.tls_sni)
        if isinstance(check, SendExpectCheck):
            return await send_expect(
                host, port, send=check.send.encode(), expect=check.expect.encode(),
                regex=check.regex, connect_timeout_s=check.connect_timeout_s,
                io_timeout_s=check.io_timeout_s, max_reply_bytes=check.max_reply_bytes)
        if isinstance(check, ExternalCheck):
            return await run_external(external_argv(check, host, port), timeout_s=check.timeout_s,
                                      dynamic=check.dynamic)
        return ProbeResult(False, 0.0, f"unknown check type {type(check).__name__}")
    except Exception as exc:            # a bug in a probe must not stop the runner
        return ProbeResult(False, 0.0, f"probe error: {_describe(exc)}")
