"""EDGE: `userlb run CONFIG`: TUN, plumbing, data-path thread and control socket.

Start-up order: load the config (errors → `path:line: message`, exit 2), open
the TUN, install the plumbing, start the data-path thread, serve the control
socket on a uvloop loop until SIGINT/SIGTERM. Shutdown undoes it all in
reverse order, also when start-up fails half way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from userlb import config as config_mod
from userlb import tcpstate
from userlb.control import ControlServer
from userlb.engine import Engine
from userlb.plumbing import RouterPlumbing
from userlb.tun import Tun
from userlb.worker import DataPath

log = logging.getLogger("userlb")


def build_engine(cfg) -> Engine:
    t = cfg.timeouts
    timeouts = tcpstate.Timeouts().with_ipvsadm_set(t.tcp, t.tcpfin, t.udp)
    return Engine(cfg.services, table_size=cfg.router.table_size, timeouts=timeouts,
                  trace_connections=cfg.router.trace_connections)


async def _serve(cfg, datapath) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    control = ControlServer(cfg.router.ctl_socket, datapath)
    await control.start()
    log.info("ready: %d service(s), control socket %s", len(cfg.services),
             cfg.router.ctl_socket)
    try:
        await stop.wait()
    finally:
        await control.close()


def run(path: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    engine = build_engine(cfg)
    r = cfg.router
    tun = plumbing = datapath = None
    try:
        tun = Tun(r.tun)
        plumbing = RouterPlumbing(r.tun, r.client_interface, r.server_interface,
                                  sorted({s.vip for s in cfg.services}))
        plumbing.install()
        datapath = DataPath(engine, tun, batch_size=r.batch_size)
        datapath.start()
        import uvloop
        uvloop.run(_serve(cfg, datapath))
    finally:
        if datapath is not None:
            datapath.stop()
        if plumbing is not None:
            plumbing.remove()
        if tun is not None:
            tun.close()
        log.info("stopped; plumbing removed")
    return 0
