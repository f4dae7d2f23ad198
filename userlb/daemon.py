"""EDGE: `userlb run CONFIG`: TUN, plumbing, data-path thread and control socket.

Start-up order: load the config (errors → `path:line: message`, exit 2), open
the TUN, install the plumbing, start the data-path thread, serve the control
socket (and the health checks, if any) on a uvloop loop until SIGINT/SIGTERM. Shutdown undoes it all in
reverse order, also when start-up fails half way. With an [ha] table the VIPs are
not claimed at start: ha/runner.py claims them when this router becomes master
and sends a priority-0 advert and releases them at shutdown.
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


def ha_config(cfg):
    """This router's HaConfig, or None (no [ha], or pair settings from lvs.cf/keepalived.conf,
    which `userlb run` does not turn into one router's settings yet: it then runs alone)."""
    from userlb.ha.config import HaConfig
    if cfg.ha is not None and not isinstance(cfg.ha, HaConfig):
        log.warning("HA settings of this config format are not run yet; running without HA")
        return None
    return cfg.ha


async def _serve(cfg, datapath, plumbing=None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    health = None
    if cfg.health:
        from userlb.healthlink import HealthLink
        health = HealthLink(cfg.health, datapath)
    ha = None
    if ha_config(cfg) is not None:
        from userlb.ha.runner import HaRunner
        ha = HaRunner(cfg.ha, plumbing, datapath)
    control = ControlServer(cfg.router.ctl_socket, datapath, health=health, ha=ha)
    await control.start()
    if ha is not None:
        await ha.start()
    if health is not None:
        await health.start()
    log.info("ready: %d service(s), %d with health checks, control socket %s",
             len(cfg.services), len(cfg.health), cfg.router.ctl_socket)
    try:
        await stop.wait()
    finally:
        if ha is not None:
            await ha.stop()          # a master sends priority 0 and releases the VIPs
        if health is not None:
            await health.stop()
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
        ha = ha_config(cfg)
        gateway = str(ha.nat_router) if ha is not None and ha.nat_router is not None else None
        plumbing = RouterPlumbing(r.tun, r.client_interface, r.server_interface,
                                  sorted({s.vip for s in cfg.services}), gateway=gateway)
        plumbing.install(claim=ha is None)       # with HA the runner claims on becoming master
        datapath = DataPath(engine, tun, batch_size=r.batch_size)
        datapath.start()
        import uvloop
        uvloop.run(_serve(cfg, datapath, plumbing))
    finally:
        if datapath is not None:
            datapath.stop()
        if plumbing is not None:
            plumbing.remove()
        if tun is not None:
            tun.close()
        log.info("stopped; plumbing removed")
    return 0
