"""EDGE: the control socket: newline-delimited JSON commands over a Unix socket.

Each request is one JSON object {"cmd": NAME, ...}; each reply is
{"ok": true, "result": ...} or {"ok": false, "error": "..."}. Commands run
on the data-path thread via DataPath.call(), so they see and change the
engine between batches. The socket is created mode 0600 (root only).
Commands: ping, services, conns, stats, trace, trace-next, edit-dest, timeout, adm
(ipvsadm's command line, run by admexec), ha (the HA role and counters; also under
"ha" in stats), and the control plane's own (reload) which run on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from userlb import admexec, snapshot
from userlb.services import ip_to_int

log = logging.getLogger("userlb.control")


def _trace_next(engine, count: int, args: dict | None = None) -> int:
    """Trace the next `count` new connections (on top of any still pending), optionally
    only those of a client, a VIP or a real server (dotted addresses in args)."""
    args = args or {}
    flt = {k: ip_to_int(args[k]) for k in ("client", "vip", "server") if args.get(k)}
    if flt or "client" in args or "vip" in args or "server" in args:
        engine.trace_filter = flt or None
    engine.trace_budget = max(engine.trace_budget, 0) + max(count, 0)
    return engine.trace_budget


def _edit_dest(engine, now, args):
    svc = engine.service_of(args["protocol"], args["vip"], int(args["vport"]))
    engine.edit_dest(svc, args["address"], int(args["port"]), int(args["weight"]))
    return "ok"


COMMANDS = {
    "ping": lambda engine, now, args: "pong",
    "services": lambda engine, now, args: {"services": snapshot.services(engine),
                                           "table_size": engine.table.capacity},
    "conns": lambda engine, now, args: snapshot.connections(engine, now),
    "stats": lambda engine, now, args: snapshot.stats(engine),
    "trace": lambda engine, now, args: engine.trace.as_json(args.get("since_s")),
    "edit-dest": _edit_dest,
    "trace-next": lambda engine, now, args: _trace_next(engine, int(args.get("count", 1)), args),
    "adm": lambda engine, now, args: admexec.run(engine, list(args["argv"]), now,
                                                 stdin=args.get("stdin"),
                                                 prog="userlb adm")._asdict(),
    "ha": lambda engine, now, args: None,     # answered by the HA runner when HA is configured
    "timeout": lambda engine, now, args: list(engine.timeouts.ipvsadm_timeout()),
}


class ControlServer:
    def __init__(self, path: str, datapath, health=None, ha=None, loop_commands=None) -> None:
        self.path = path
        self.datapath = datapath
        self.health = health
        self.loop_commands = loop_commands or {}   # name → async fn(args): run on the loop
        self.ha = ha          # ha.runner.HaRunner or None; its status() runs on this loop
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        old = os.umask(0o077)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=self.path)
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _add_health(self, services: list[dict]) -> None:
        """Each real server's health verdict ("up", "down", "pending", "unchecked")."""
        for svc in services:
            skey = svc["key"]
            for dest in svc["dests"]:
                dest["health"] = (self.health.health_of(skey, (dest["addr"], dest["port"]))
                                  if self.health else "unchecked")

    async def _on_loop(self, cmd: str, request: dict) -> dict:
        try:
            return {"ok": True, "result": await self.loop_commands[cmd](request)}
        except Exception as exc:  # reported back to the operator
            return {"ok": False, "error": str(exc)}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._handle(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _handle(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            cmd = request.pop("cmd")
            if cmd in self.loop_commands:
                return await self._on_loop(cmd, request)
            fn = COMMANDS[cmd]
        except (ValueError, KeyError, AttributeError, TypeError):
            names = ", ".join([*COMMANDS, *self.loop_commands])
            return {"ok": False, "error": f"bad request (commands: {names})"}
        if cmd == "ha" and self.ha is not None:
            return {"ok": True, "result": self.ha.status()}
        fut = self.datapath.call(lambda engine, now: fn(engine, now, request))
        try:
            result = await asyncio.wrap_future(fut)
            if cmd == "services":
                self._add_health(result["services"])
            if cmd == "stats":
                result["ha"] = self.ha.status() if self.ha is not None else None
            return {"ok": True, "result": result}
        except Exception as exc:  # an operator's mistake, reported back
            return {"ok": False, "error": str(exc)}
