"""Prometheus metrics: a custom collector over one snapshot dict per scrape.

What it does: `snapshot_for_metrics(engine, now, rates)` takes one consistent
look at the engine (run it on the data-path thread) as a plain dict: services
with their real servers (connection counters, raw packet/byte counters, the
estimator's rates, weight, health), drops by reason, the connection count and,
if given, the HA role and transitions. `UserlbCollector(source)` turns whatever
`source()` returns into metric families at each scrape:

  per service and real server (labels service="TCP 198.18.0.1:80" | "FWM 7",
  real_server="198.18.1.1:80"): userlb_connections_active / _inactive /
  _persistent, userlb_connections_total, userlb_packets_total{direction},
  userlb_bytes_total{direction}, userlb_connections_per_second,
  userlb_packets_per_second{direction}, userlb_bytes_per_second{direction},
  userlb_real_server_up, userlb_real_server_checked, userlb_real_server_weight,
  userlb_real_server_overloaded;
  per service: userlb_service_info{scheduler}, userlb_service_connections_total,
  userlb_service_packets_total{direction}, userlb_service_bytes_total{direction}
  and their _per_second rates;
  global: userlb_drops_total{reason} (the engine's reasons, and with_edge()'s
  tun_queue_full and write_refused: drops.EDGE_DROP_REASONS),
  userlb_passed_unmodified_total, userlb_connection_table_entries,
  userlb_connection_table_size, userlb_tun_queue_length,
  userlb_tun_frames_total{direction} ("to_userlb": the kernel queued it for userlb,
  "from_userlb": userlb wrote it), userlb_ha_role{role}, userlb_ha_transitions_total.

Counters are the raw ones, never reset by `ipvsadm -Z` (which moves the
estimator's base only), so rate() over them is right. A real server is up (1)
when its health is "up" or "unchecked" (no checker: IPVS sends it traffic), down
(0) when "down" or "pending".

`with_edge(snap, tun, datapath)` adds what the engine cannot see: the TUN's
counters (tunstats.tun_counters, read by the control plane) and the data path's
(DataPath.counters()).

What it does not do: serve HTTP (the daemon's edge starts
prometheus_client.start_http_server on the configured address) or take the
snapshot on the right thread (the `source` given to the collector must).
Decides nothing.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from userlb import estimator, snapshot
from userlb.drops import DropReason

HA_ROLES = ("init", "backup", "master", "fault")
_DIRECTIONS = (("in", "inpkts", "inbytes", "inpps", "inbps"),
               ("out", "outpkts", "outbytes", "outpps", "outbps"))


def service_label(protocol: str, vip: str, port: int, fwmark: int = 0) -> str:
    return f"FWM {fwmark}" if fwmark else f"{protocol.upper()} {vip}:{port}"


def snapshot_for_metrics(engine, now: float, rates: estimator.Estimator | None = None, *,
                         health_of: Callable | None = None, ha: dict | None = None) -> dict:
    """One look at the engine for the collector. `health_of(service_key, (addr, port))` →
    "up" | "down" | "pending" | "unchecked" (healthlink.HealthLink.health_of); `ha` is the
    HA runner's status() dict. Runs the estimator's due steps first."""
    est = rates if rates is not None else estimator.for_engine(engine)
    est.tick(engine, now)
    report = est.rates(engine)
    services = []
    for index, rt in enumerate(engine.services):
        if rt is None:
            continue
        c, d = rt.config, rt.dests
        dests = []
        for k in range(len(d)):
            base = snapshot.dest_row(d, k)
            row = report.dest(d.uid[k])
            state = (health_of(c.key, (base["addr"], base["port"])) if health_of
                     else "unchecked")
            dests.append({**base, "name": f"{base['address']}:{base['port']}", "health": state,
                          **{f: getattr(row, f) for f in estimator.RATE_FIELDS}})
        totals = report.service_totals.get(index, (0,) * 5)
        rate = report.service(index)
        services.append({
            "name": service_label(c.protocol, c.vip, c.port, c.fwmark),
            "scheduler": c.scheduler, "dests": dests,
            **dict(zip(estimator.FIELDS, totals)),
            **{f: getattr(rate, f) for f in estimator.RATE_FIELDS}})
    drops = {r.name.lower(): int(engine.drops[r]) for r in DropReason if r}
    out = {"services": services, "drops": drops, "connections": len(engine.table),
           "table_size": engine.table.capacity, "passed_unmodified": int(engine.passed)}
    if ha is not None:
        transitions = ha.get("counters", {}).get("transitions", len(ha.get("transitions", ())))
        out["ha"] = {"role": str(ha.get("state", "")).lower(), "transitions": int(transitions)}
    return out


def with_edge(snap: dict, tun: dict | None, datapath: dict | None) -> dict:
    """`snap` with the edge drops under "drops" (zeros too, as the engine's reasons are)
    and the TUN's counters under "tun"; a source that is None adds nothing."""
    return {**snap, "drops": {**snap["drops"], **snapshot.edge_drops(tun, datapath)},
            "tun": tun}


class UserlbCollector(Collector):
    """Yields userlb's metric families from `source()` (a snapshot_for_metrics dict)."""

    def __init__(self, source: Callable[[], dict]) -> None:
        self.source = source

    def describe(self) -> list:
        return []            # do not take a snapshot when the collector is registered

    def collect(self) -> Iterator:
        snap = self.source()
        yield from _server_families(snap["services"])
        yield from _service_families(snap["services"])
        yield from _global_families(snap)


def _server_families(services: list[dict]) -> Iterator:
    labels = ["service", "real_server"]
    g = {name: GaugeMetricFamily(f"userlb_{name}", doc, labels=labels) for name, doc in (
        ("connections_active", "Active connections (activeconns)"),
        ("connections_inactive", "Inactive connections (inactconns)"),
        ("connections_persistent", "Persistence templates pointing at the server (persistconns)"),
        ("connections_per_second", "Connection rate, IPVS estimator (cps)"),
        ("real_server_up", "1 if the server's health is up or unchecked, else 0"),
        ("real_server_checked", "1 if a health checker decides for the server"),
        ("real_server_weight", "Current weight (0 = quiesced)"),
        ("real_server_overloaded", "1 while the upper connection threshold holds it"))}
    dl = labels + ["direction"]
    conns = CounterMetricFamily("userlb_connections", "Connections scheduled to the server",
                                labels=labels)
    pkts = CounterMetricFamily("userlb_packets", "Packets forwarded", labels=dl)
    nbytes = CounterMetricFamily("userlb_bytes", "Bytes forwarded (IP length)", labels=dl)
    pps = GaugeMetricFamily("userlb_packets_per_second", "Packet rate, IPVS estimator", labels=dl)
    bps = GaugeMetricFamily("userlb_bytes_per_second", "Byte rate, IPVS estimator", labels=dl)
    for svc in services:
        for d in svc["dests"]:
            lv = [svc["name"], d["name"]]
            for name, value in (("connections_active", d["active"]),
                                ("connections_inactive", d["inactive"]),
                                ("connections_persistent", d["persist"]),
                                ("connections_per_second", d["cps"]),
                                ("real_server_up", int(d["health"] in ("up", "unchecked"))),
                                ("real_server_checked", int(d["health"] != "unchecked")),
                                ("real_server_weight", d["weight"]),
                                ("real_server_overloaded", int(d["overloaded"]))):
                g[name].add_metric(lv, value)
            conns.add_metric(lv, d["conns"])
            for direction, pk, by, pr, br in _DIRECTIONS:
                pkts.add_metric(lv + [direction], d[pk])
                nbytes.add_metric(lv + [direction], d[by])
                pps.add_metric(lv + [direction], d[pr])
                bps.add_metric(lv + [direction], d[br])
    yield from g.values()
    yield from (conns, pkts, nbytes, pps, bps)


def _service_families(services: list[dict]) -> Iterator:
    info = GaugeMetricFamily("userlb_service_info", "A configured virtual service",
                             labels=["service", "scheduler"])
    conns = CounterMetricFamily("userlb_service_connections", "Connections scheduled by the "
                                "service (removed servers' included)", labels=["service"])
    cps = GaugeMetricFamily("userlb_service_connections_per_second",
                            "Service connection rate, IPVS estimator", labels=["service"])
    dl = ["service", "direction"]
    pkts = CounterMetricFamily("userlb_service_packets", "Packets of the service", labels=dl)
    nbytes = CounterMetricFamily("userlb_service_bytes", "Bytes of the service", labels=dl)
    pps = GaugeMetricFamily("userlb_service_packets_per_second", "Service packet rate", labels=dl)
    bps = GaugeMetricFamily("userlb_service_bytes_per_second", "Service byte rate", labels=dl)
    for svc in services:
        info.add_metric([svc["name"], svc["scheduler"]], 1)
        conns.add_metric([svc["name"]], svc["conns"])
        cps.add_metric([svc["name"]], svc["cps"])
        for direction, pk, by, pr, br in _DIRECTIONS:
            pkts.add_metric([svc["name"], direction], svc[pk])
            nbytes.add_metric([svc["name"], direction], svc[by])
            pps.add_metric([svc["name"], direction], svc[pr])
            bps.add_metric([svc["name"], direction], svc[br])
    yield from (info, conns, cps, pkts, nbytes, pps, bps)


def _global_families(snap: dict) -> Iterator:
    drops = CounterMetricFamily("userlb_drops", "Frames dropped, by reason", labels=["reason"])
    for reason, count in sorted(snap.get("drops", {}).items()):
        drops.add_metric([reason], count)
    yield drops
    yield CounterMetricFamily("userlb_passed_unmodified", "Frames forwarded untouched (not ours)",
                              value=snap.get("passed_unmodified", 0))
    yield GaugeMetricFamily("userlb_connection_table_entries",
                            "Connections and persistence templates in the table",
                            value=snap.get("connections", 0))
    yield GaugeMetricFamily("userlb_connection_table_size", "Connection table capacity",
                            value=snap.get("table_size", 0))
    tun = snap.get("tun")
    if tun is not None:
        yield GaugeMetricFamily("userlb_tun_queue_length", "The TUN's txqueuelen: frames the "
                                "kernel queues for userlb before it drops (tun_queue_full)",
                                value=tun["txqueuelen"])
        frames = CounterMetricFamily("userlb_tun_frames", "Frames through the TUN device",
                                     labels=["direction"])
        frames.add_metric(["to_userlb"], tun["tx_packets"])
        frames.add_metric(["from_userlb"], tun["rx_packets"])
        yield frames
    ha = snap.get("ha")
    if ha is None:
        return
    role = GaugeMetricFamily("userlb_ha_role", "1 for the node's current HA role",
                             labels=["role"])
    roles = HA_ROLES + ((ha["role"],) if ha["role"] not in HA_ROLES else ())
    for name in roles:
        role.add_metric([name], int(name == ha["role"]))
    yield role
    yield CounterMetricFamily("userlb_ha_transitions", "HA state changes",
                              value=ha["transitions"])
