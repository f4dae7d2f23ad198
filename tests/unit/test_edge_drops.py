"""Drops outside the engine: the TUN's full queue and refused writes, next to the engine's
drop reasons in `stats` (snapshot.with_edge) and in the metrics (metrics.with_edge)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from userlb import snapshot
from userlb.drops import EDGE_DROP_REASONS, DropReason
from userlb.engine import Engine
from userlb.metrics import UserlbCollector, snapshot_for_metrics, with_edge
from userlb.services import RealServer, VirtualService

WEB = VirtualService("tcp", "198.18.0.1", 80, "rr", (RealServer("198.18.1.1", 8080),))
TUN = {"name": "ulb0", "txqueuelen": 512, "tx_packets": 1000, "tx_dropped": 250,
       "rx_packets": 990, "rx_dropped": 0, "tx_errors": 0, "rx_errors": 0}
DATAPATH = {"batches": 10, "frames": 1000, "engine_errors": 0, "write_failures": 3}


def test_edge_reasons_are_not_engine_reasons():
    engine_names = {r.name.lower() for r in DropReason}
    assert set(EDGE_DROP_REASONS) == {"tun_queue_full", "write_refused"}
    assert not engine_names & set(EDGE_DROP_REASONS)


def test_edge_drops_from_tun_and_datapath_counters():
    assert snapshot.edge_drops(TUN, DATAPATH) == {"tun_queue_full": 250, "write_refused": 3}
    assert snapshot.edge_drops(None, DATAPATH) == {"write_refused": 3}
    assert snapshot.edge_drops(None, None) == {}


def test_stats_lists_edge_drops_beside_the_engines():
    eng = Engine([WEB])
    eng.drops[DropReason.NO_SERVICE] = 7
    out = snapshot.with_edge(snapshot.stats(eng), TUN, DATAPATH)
    assert out["drops"] == {"no_service": 7, "tun_queue_full": 250, "write_refused": 3}
    assert out["tun"] == TUN and out["datapath"] == DATAPATH
    assert out["table_size"] == eng.table.capacity


def test_stats_leaves_out_edge_drops_that_did_not_happen():
    quiet = {**TUN, "tx_dropped": 0}
    out = snapshot.with_edge(snapshot.stats(Engine([WEB])), quiet, {**DATAPATH,
                                                                     "write_failures": 0})
    assert out["drops"] == {}
    assert out["tun"]["txqueuelen"] == 512


def scrape(snap: dict) -> dict:
    registry = CollectorRegistry()
    registry.register(UserlbCollector(lambda: snap))
    text = generate_latest(registry).decode()
    return {f.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)}


def test_metrics_carry_edge_drops_and_tun_counters():
    snap = with_edge(snapshot_for_metrics(Engine([WEB]), 1.0), TUN, DATAPATH)
    got = scrape(snap)
    drops = got["userlb_drops"]
    assert drops[("userlb_drops_total", (("reason", "tun_queue_full"),))] == 250
    assert drops[("userlb_drops_total", (("reason", "write_refused"),))] == 3
    assert drops[("userlb_drops_total", (("reason", "no_service"),))] == 0
    assert got["userlb_tun_queue_length"] == {("userlb_tun_queue_length", ()): 512}
    frames = got["userlb_tun_frames"]
    assert frames[("userlb_tun_frames_total", (("direction", "to_userlb"),))] == 1000
    assert frames[("userlb_tun_frames_total", (("direction", "from_userlb"),))] == 990


def test_metrics_without_tun_counters_have_no_tun_families():
    got = scrape(with_edge(snapshot_for_metrics(Engine([WEB]), 1.0), None, None))
    assert "userlb_tun_queue_length" not in got and "userlb_tun_frames" not in got
    assert ("userlb_drops_total", (("reason", "tun_queue_full"),)) not in got["userlb_drops"]
