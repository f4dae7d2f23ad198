"""EDGE: thin helpers around Linux network namespaces made by `ip netns add`.

`ip_cmd(ns, ...)` runs ip(8) inside a namespace; `socket_in(ns, ...)` creates a
socket that lives in a namespace while the caller stays where it is (setns(2)
on a short-lived thread: a thread's namespace change dies with it, and the
socket keeps the namespace it was made in). No policy lives here.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its stderr in the message."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def ip_cmd(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ip [-n ns] args...`"""
    prefix = ["ip", "-n", ns] if ns else ["ip"]
    return run([*prefix, *args], check=check)


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *argv]


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _setns(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_namespace(ns: str, fn, *args, **kw):
    """Call fn(*args, **kw) on a thread that has entered namespace `ns`; return its result."""
    result: dict = {}

    def target() -> None:
        try:
            _setns(ns)
            result["value"] = fn(*args, **kw)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def socket_in(ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
              proto: int = 0) -> socket.socket:
    """A new socket that belongs to namespace `ns`."""
    return in_namespace(ns, socket.socket, family, type, proto)
