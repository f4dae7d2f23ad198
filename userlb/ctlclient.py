"""EDGE: client side of the control socket (newline-delimited JSON over a Unix socket).

`request(path, cmd, **args)` sends one command and returns the decoded reply;
`wait_ready(path, proc, timeout_s)` waits until a freshly started balancer
answers `ping`. Used by `userlb adm`/`show`, the lab and the tests.
"""

from __future__ import annotations

import json
import socket
import time


class ControlError(RuntimeError):
    """The balancer answered with an error, or could not be reached."""


def request(path: str, cmd: str, timeout_s: float = 10.0, **args) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(f"cannot reach userlb at {path}: {exc.strerror}") from exc
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply["result"]


def wait_ready(path: str, proc, timeout_s: float) -> bool:
    """True once `ping` succeeds; False if `proc` exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            request(path, "ping", timeout_s=1.0)
            return True
        except (ControlError, OSError, ValueError):
            time.sleep(0.05)
    return False
