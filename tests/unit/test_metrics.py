"""The Prometheus collector: families, labels and values, through generate_latest."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP

from userlb import estimator
from userlb.admexec import run
from userlb.drops import DropReason
from userlb.engine import Engine
from userlb.estimator import Estimator
from userlb.frames import FrameBatch
from userlb.metrics import UserlbCollector, snapshot_for_metrics
from userlb.services import RealServer, VirtualService, ip_to_int

WEB = VirtualService("tcp", "198.18.0.1", 80, "rr",
                     (RealServer("198.18.1.1", 8080), RealServer("198.18.1.2", 8080, weight=3)))
MARK = VirtualService("tcp", "0.0.0.0", 0, "wlc", (RealServer("198.18.1.4", 0),), fwmark=7,
                      match=(("tcp", "198.18.0.7", 443),))
S, A, B = "TCP 198.18.0.1:80", "198.18.1.1:8080", "198.18.1.2:8080"


def scrape(source) -> dict[str, dict]:
    """{family name: {(sample name, sorted labels): value}} from the text exposition."""
    registry = CollectorRegistry()
    registry.register(UserlbCollector(source))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value
                            for s in family.samples}
    return out


def busy_engine():
    eng, est = Engine([WEB, MARK], table_size=1024), Estimator()
    est.tick(eng, 0.0)
    frames = [IP(src="198.18.100.1", dst="198.18.0.1") / TCP(sport=1000 + i, dport=80, flags="S")
              for i in range(3)]
    frames.append(IP(src="198.18.100.1", dst="198.18.0.1") / TCP(dport=81, flags="S"))
    eng.process(FrameBatch.from_frames([bytes(f) for f in frames]), 0.5)
    return eng, est


def test_snapshot_for_metrics():
    eng, est = busy_engine()
    health = {((6, ip_to_int("198.18.0.1"), 80), (ip_to_int("198.18.1.1"), 8080)): "down"}
    snap = snapshot_for_metrics(eng, 2.0, est,
                                health_of=lambda s, r: health.get((tuple(s), r), "up"),
                                ha={"state": "MASTER", "counters": {"claims": 1},
                                    "transitions": [{"old": "BACKUP", "new": "MASTER"}]})
    web, mark = snap["services"]
    assert (web["name"], mark["name"]) == (S, "FWM 7")
    assert (web["conns"], web["inpkts"], web["inbytes"]) == (3, 3, 120)
    b, a = web["dests"]                                  # scan order: .2 was added last
    assert (a["name"], a["health"], a["active"], a["conns"]) == (A, "down", 1, 1)
    assert (b["name"], b["health"], b["weight"], b["active"]) == (B, "up", 3, 2)
    assert b["inbps"] == ((80 << 4 >> 2) + 15) >> 5 == 10       # the estimator stepped at 2 s
    assert snap["drops"]["no_service"] == 1 and snap["drops"]["no_dest"] == 0
    assert snap["connections"] == 3 and snap["table_size"] == 1024
    assert snap["ha"] == {"role": "master", "transitions": 1}
    assert "ha" not in snapshot_for_metrics(eng, 2.0, est)


def test_collector_families_and_labels():
    eng, est = busy_engine()
    snap = snapshot_for_metrics(eng, 2.0, est, ha={"state": "BACKUP", "transitions": [],
                                                   "counters": {"transitions": 4}})
    m = scrape(lambda: snap)
    sv = (("real_server", A), ("service", S))
    assert m["userlb_connections_active"][("userlb_connections_active", sv)] == 1
    assert m["userlb_connections_inactive"][("userlb_connections_inactive", sv)] == 0
    assert m["userlb_connections_persistent"][("userlb_connections_persistent", sv)] == 0
    assert m["userlb_connections"][("userlb_connections_total", sv)] == 1
    assert m["userlb_packets"][("userlb_packets_total", (("direction", "in"), *sv))] == 1
    assert m["userlb_packets"][("userlb_packets_total", (("direction", "out"), *sv))] == 0
    assert m["userlb_bytes"][("userlb_bytes_total", (("direction", "in"), *sv))] == 40
    assert m["userlb_bytes_per_second"][("userlb_bytes_per_second",
                                         (("direction", "in"), *sv))] == 5
    assert m["userlb_connections_per_second"][("userlb_connections_per_second", sv)] == 0
    assert m["userlb_real_server_up"][("userlb_real_server_up", sv)] == 1       # unchecked
    assert m["userlb_real_server_checked"][("userlb_real_server_checked", sv)] == 0
    assert m["userlb_real_server_weight"][("userlb_real_server_weight",
                                           (("real_server", B), ("service", S)))] == 3
    assert m["userlb_real_server_overloaded"][("userlb_real_server_overloaded", sv)] == 0
    fwm = (("real_server", "198.18.1.4:0"), ("service", "FWM 7"))
    assert m["userlb_real_server_weight"][("userlb_real_server_weight", fwm)] == 1
    assert m["userlb_service_info"][("userlb_service_info",
                                     (("scheduler", "rr"), ("service", S)))] == 1
    assert m["userlb_service_connections"][("userlb_service_connections_total",
                                            (("service", S),))] == 3
    assert m["userlb_service_packets"][("userlb_service_packets_total",
                                        (("direction", "in"), ("service", S)))] == 3
    assert m["userlb_service_bytes"][("userlb_service_bytes_total",
                                      (("direction", "in"), ("service", S)))] == 120
    assert m["userlb_service_bytes_per_second"][("userlb_service_bytes_per_second",
                                                 (("direction", "in"), ("service", S)))] == 15
    drops = m["userlb_drops"]
    assert drops[("userlb_drops_total", (("reason", "no_service"),))] == 1
    assert len(drops) == len(DropReason) - 1                   # every reason, zeros too
    assert m["userlb_passed_unmodified"][("userlb_passed_unmodified_total", ())] == 0
    assert m["userlb_connection_table_entries"][("userlb_connection_table_entries", ())] == 3
    assert m["userlb_connection_table_size"][("userlb_connection_table_size", ())] == 1024
    roles = m["userlb_ha_role"]
    assert {dict(k[1])["role"]: v for k, v in roles.items()} == {
        "init": 0, "backup": 1, "master": 0, "fault": 0}
    assert m["userlb_ha_transitions"][("userlb_ha_transitions_total", ())] == 4


def test_health_maps_to_up_and_checked():
    eng, est = busy_engine()
    for state, up, checked in (("up", 1, 1), ("down", 0, 1), ("pending", 0, 1),
                               ("unchecked", 1, 0)):
        snap = snapshot_for_metrics(eng, 2.0, est, health_of=lambda s, r, v=state: v)
        m = scrape(lambda: snap)
        sv = (("real_server", A), ("service", S))
        assert m["userlb_real_server_up"][("userlb_real_server_up", sv)] == up
        assert m["userlb_real_server_checked"][("userlb_real_server_checked", sv)] == checked


def test_counters_survive_zero_and_source_runs_per_scrape():
    eng, est = busy_engine()
    calls = []

    def source():
        calls.append(1)
        return snapshot_for_metrics(eng, 2.0, est)
    registry = CollectorRegistry()
    registry.register(UserlbCollector(source))
    assert calls == []                                          # registering takes no snapshot
    assert run(eng, ["-Z"], 2.0, rates=est).exit_code == 0
    text = generate_latest(registry).decode()
    assert len(calls) == 1
    assert f'userlb_service_connections_total{{service="{S}"}} 3.0' in text
    assert f'userlb_connections_per_second{{real_server="{B}",service="{S}"}} 0.0' in text


def test_default_estimator_and_no_services():
    eng = Engine([], table_size=64)
    snap = snapshot_for_metrics(eng, 0.0)
    assert snap["services"] == [] and estimator.for_engine(eng).next_due == 2.0
    m = scrape(lambda: snap)
    assert "userlb_ha_role" not in m and "userlb_connections_active" in m
