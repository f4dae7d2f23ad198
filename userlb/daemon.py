"""EDGE: `userlb run CONFIG`: TUN, plumbing, data-path thread, then the control plane.

Start-up order: load the config (TOML, lvs.cf or keepalived.conf; errors →
`path:line: message`, exit 2), open the TUN (one fd per queue), install the
plumbing, start the data-path threads (one per queue), run the control plane
(controlplane.py) on a uvloop loop until SIGINT/SIGTERM. The plumbing bounds the
TUN's queue to two read batches (plumbing.tun_queue_length). Shutdown undoes it all
in reverse order, also when start-up fails half way. With an [ha] table the
VIPs are not claimed at start: ha/runner.py claims them when this router becomes
master and sends a priority-0 advert and releases them at shutdown.
"""

from __future__ import annotations

import logging
import sys

from userlb import configload, logs, tcpstate
from userlb.config import ConfigError
from userlb.controlplane import ControlPlane
from userlb.engine import Engine
from userlb.plumbing import RouterPlumbing, tun_queue_length
from userlb.tun import open_queues
from userlb.worker import Workers

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


def run(path: str) -> int:
    logs.setup()
    try:
        cfg, warnings = configload.load_any(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.setup(cfg.router.log_format)
    for warning in warnings:
        log.warning("%s", warning)
    engine = build_engine(cfg)
    r = cfg.router
    ha = ha_config(cfg)
    queues: list = []
    plumbing = datapath = None
    try:
        queues = open_queues(r.tun, r.queues, offload=r.offload)
        gateway = str(ha.nat_router) if ha is not None and ha.nat_router is not None else None
        plumbing = RouterPlumbing(r.tun, r.client_interface, r.server_interface,
                                  sorted({s.vip for s in cfg.services if not s.fwmark} |
                                         {m[1] for s in cfg.services for m in s.match}),
                                  gateway=gateway, txqueuelen=tun_queue_length(r.batch_size))
        plumbing.install(claim=ha is None)       # with HA the runner claims on becoming master
        datapath = Workers(engine, queues, batch_size=r.batch_size, io=r.io)
        datapath.start()
        import uvloop
        uvloop.run(ControlPlane(cfg, path, datapath, plumbing, ha,
                                tun_name=queues[0].name).run())
    finally:
        if datapath is not None:
            datapath.stop()
        if plumbing is not None:
            plumbing.remove()
        for queue in queues:
            queue.close()
        log.info("stopped; plumbing removed")
    return 0
