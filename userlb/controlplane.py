"""EDGE: everything `userlb run` does on its uvloop loop besides moving packets.

The control socket, health checks, HA, the rate estimator's 2-s tick, the
Prometheus endpoint, the web view (web.py) and live reload (SIGHUP or `userlb
reload`): parse the file again, diff it against the running config and apply the
differences between batches (reload.py). A file with errors changes nothing and
the reply says why; established connections, health state and the HA role are
untouched. Engine work always goes through DataPath.call, so it runs on the
data-path thread. `stats` (control socket) and the metrics add the TUN's kernel
counters (tunstats, read here by netlink, never on the data path) and the data
path's, so the overload drops (tun_queue_full) stand next to the engine's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

from userlb import configload, estimator, reload, snapshot, tunstats
from userlb.config import ConfigError
from userlb.configdiff import diff
from userlb.control import ControlServer

log = logging.getLogger("userlb")

ESTIMATOR_PERIOD_S = 2.0      # ip_vs_est: every 2 s


class ControlPlane:
    def __init__(self, cfg, path: str, datapath, plumbing=None, ha_config=None,
                 tun_name: str | None = None) -> None:
        self.cfg = cfg
        self.tun_name = tun_name or cfg.router.tun
        self.path = path
        self.datapath = datapath
        self.plumbing = plumbing
        self.ha_config = ha_config
        self.health = self.ha = self.metrics_server = self.web = None
        self.control = None

    async def call(self, fn):
        """Run fn(engine, now) on the data-path thread and await its result."""
        return await asyncio.wrap_future(self.datapath.call(fn))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._sighup()))
        await self._start(loop)
        log.info("ready: %d service(s), %d with health checks, control socket %s",
                 len(self.cfg.services), len(self.cfg.health), self.cfg.router.ctl_socket)
        ticker = loop.create_task(self._tick_estimator())
        try:
            await stop.wait()
        finally:
            ticker.cancel()
            await self._stop()

    async def _start(self, loop) -> None:
        if self.cfg.health:
            from userlb.healthlink import HealthLink
            self.health = HealthLink(self.cfg.health, self.datapath)
        if self.ha_config is not None:
            from userlb.ha.runner import HaRunner
            self.ha = HaRunner(self.ha_config, self.plumbing, self.datapath)
        self.control = ControlServer(self.cfg.router.ctl_socket, self.datapath,
                                     health=self.health, ha=self.ha,
                                     loop_commands={"reload": self.reload,
                                                    "stats": self.stats})
        await self.control.start()
        if self.ha is not None:
            await self.ha.start()
        if self.health is not None:
            await self.health.start()
        if self.cfg.router.metrics:
            self._start_metrics(loop)
        if self.cfg.router.web:
            from userlb.web import WebServer
            peer = self.ha_config.peer if self.ha_config is not None else None
            self.web = WebServer(self.cfg.router.web, self.cfg.router.web_token, self.call,
                                 health=self.health, ha=self.ha,
                                 peer=str(peer) if peer is not None else None)
            await self.web.start()

    async def _stop(self) -> None:
        if self.web is not None:
            await self.web.close()
        if self.ha is not None:
            await self.ha.stop()          # a master sends priority 0 and releases the VIPs
        if self.health is not None:
            await self.health.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        await self.control.close()

    async def _tick_estimator(self) -> None:
        while True:
            await asyncio.sleep(ESTIMATOR_PERIOD_S)
            await self.call(lambda engine, now: estimator.tick(engine, now))

    # -- drops at the edge ----------------------------------------------------------------
    def _datapath_counters(self) -> dict | None:
        """Runs on the data-path thread (inside a call), so it is one consistent look."""
        counters = getattr(self.datapath, "counters", None)
        return counters() if counters is not None else None

    def _tun_counters(self) -> dict | None:
        try:
            return tunstats.tun_counters(self.tun_name)
        except Exception as exc:     # netlink trouble: report the rest, and say so in the log
            log.warning("cannot read the TUN's counters: %s", exc)
            return None

    async def stats(self, args: dict) -> dict:
        """The control socket's `stats`: the engine's, the data path's and the TUN's."""
        stats, datapath = await self.call(lambda engine, now: (snapshot.stats(engine),
                                                               self._datapath_counters()))
        tun = await asyncio.to_thread(self._tun_counters)
        out = snapshot.with_edge(stats, tun, datapath)
        out["ha"] = self.ha.status() if self.ha is not None else None
        return out

    # -- metrics ----------------------------------------------------------------------
    def _start_metrics(self, loop) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from userlb import metrics
        host, _, port = self.cfg.router.metrics.rpartition(":")
        registry = CollectorRegistry()
        registry.register(metrics.UserlbCollector(lambda: self._metrics_snapshot(loop)))
        self.metrics_server, _ = start_http_server(int(port), host, registry=registry)
        log.info("metrics on http://%s/metrics", self.cfg.router.metrics)

    def _metrics_snapshot(self, loop) -> dict:
        """Runs on the HTTP server's thread: HA status from the loop, the rest from the data path."""
        from userlb import metrics
        ha = None
        if self.ha is not None:
            ha = asyncio.run_coroutine_threadsafe(self._ha_status(), loop).result(5)
        health_of = self.health.health_of if self.health is not None else None
        snap, datapath = self.datapath.call(lambda engine, now: (metrics.snapshot_for_metrics(
            engine, now, health_of=health_of, ha=ha), self._datapath_counters())).result(5)
        return metrics.with_edge(snap, self._tun_counters(), datapath)

    async def _ha_status(self) -> dict:
        return self.ha.status()

    # -- reload -----------------------------------------------------------------------
    async def _sighup(self) -> None:
        try:
            lines = await self.reload({})
            log.info("reloaded %s: %s", self.path, "; ".join(lines["applied"]) or "no changes")
        except Exception as exc:  # a bad file: the running config stays, and the log says why
            log.error("reload of %s refused, running configuration kept:\n%s", self.path, exc)

    async def reload(self, args: dict) -> dict:
        try:
            new, warnings = configload.load_any(self.path)
        except ConfigError as exc:
            raise ValueError(f"running configuration kept:\n{exc}") from None
        changes = diff(self.cfg, new)
        is_down = (lambda s, r: self.health.health_of(s, r) == "down") if self.health else (
            lambda s, r: False)
        applied = await self.call(lambda engine, now: reload.apply_changes(engine, changes,
                                                                            is_down))
        if new.ha != self.cfg.ha:
            applied.append("ha: changes need a restart (not applied)")
        if self.health is not None:
            await self.health.reload(new.health)
        elif new.health:
            applied.append("health checks added: need a restart (not applied)")
        router = dataclasses.replace(self.cfg.router,
                                     trace_connections=new.router.trace_connections)
        self.cfg = dataclasses.replace(new, router=router, ha=self.cfg.ha)
        return {"applied": applied, "warnings": [str(w) for w in warnings]}
