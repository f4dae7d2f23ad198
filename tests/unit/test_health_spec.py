"""health.spec and health.presets: check dataclasses, presets, and the TOML shape of docs/health.md."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from userlb.health import (ExternalCheck, HttpCheck, SendExpectCheck, ServiceHealth, TcpCheck,
                           check_from_table, keepalived_knobs, parse_status_codes,
                           service_health_from_tables, with_preset)
from userlb.services import RealServer, VirtualService

DOC = Path(__file__).resolve().parents[2] / "docs" / "health.md"


def doc_tomls() -> list[dict]:
    return [tomllib.loads(block) for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)]


def check_tables(node) -> list[dict]:
    """Every table found under a "check" key, anywhere in a parsed document."""
    if isinstance(node, list):
        return [t for item in node for t in check_tables(item)]
    if not isinstance(node, dict):
        return []
    found = [t for key, value in node.items() if key != "check" for t in check_tables(value)]
    return found + list(node.get("check", []))


def test_every_toml_example_in_the_docs_builds():
    docs = doc_tomls()
    assert len(docs) >= 6
    checks = [check_from_table(t) for doc in docs for t in check_tables(doc)]
    assert {type(c) for c in checks} == {TcpCheck, HttpCheck, SendExpectCheck, ExternalCheck}
    assert any(isinstance(c, HttpCheck) and c.tls for c in checks)


def test_full_doc_example_builds_a_service_health():
    doc = doc_tomls()[0]
    svc_table = doc["service"][0]
    reals = tuple(RealServer(r["address"], r.get("port", svc_table["port"]), r.get("weight", 1))
                  for r in svc_table["real"])
    vs = VirtualService(svc_table["protocol"], svc_table["vip"], svc_table["port"], reals=reals)
    health = service_health_from_tables(vs, svc_table["health"], [r.get("check", []) for r in svc_table["real"]])
    assert health.on_failure == "quiesce" and (health.quorum, health.hysteresis) == (2, 1)
    assert health.sorry_server == RealServer("198.19.0.250", 80, 1)
    http, tcp = health.checks[0]
    assert http.status_codes == tuple(range(200, 300)) + (301,) and (http.fall, http.rise) == (3, 2)
    assert tcp.connect_port == 8443
    (ext,) = health.checks[1]
    assert ext.dynamic and (ext.interval_s, ext.fall, ext.timeout_s) == (10, 1, 10)


def test_presets():
    nanny = check_from_table({"type": "send_expect", "preset": "nanny", "timeout_s": 6, "reentry_s": 60,
                              "expect": "HTTP"})
    assert (nanny.interval_s, nanny.connect_timeout_s, nanny.io_timeout_s) == (6, 6, 6)
    assert (nanny.fall, nanny.rise, nanny.alpha, nanny.initial_rise) == (1, 10, True, 1)
    https = check_from_table({"type": "https", "preset": "keepalived", "delay_loop_s": 6})
    assert https.tls and (https.fall, https.delay_before_retry_s, https.interval_s) == (2, 3.0, 6)
    assert https.warmup_s is None                     # random in [0, delay_loop]
    misc = keepalived_knobs(ExternalCheck)
    assert (misc["fall"], misc["timeout_s"]) == (1, 60)
    explicit = check_from_table({"type": "tcp", "preset": "keepalived", "retry": 3, "fall": 1})
    assert explicit.fall == 1                         # explicit keys win over the preset
    assert with_preset(TcpCheck(), "nanny", timeout_s=10, reentry_s=5).rise == 1


@pytest.mark.parametrize("table,message", [
    ({"type": "ping"}, "check type"),
    ({"type": "tcp", "path": "/"}, "unknown key 'path'"),
    ({"type": "http", "tls": True}, "unknown key 'tls'"),
    ({"type": "external"}, "program"),
    ({"type": "tcp", "preset": "ldirectord"}, "preset"),
    ({"type": "tcp", "fall": 0}, "fall"),
    ({"type": "http", "digest_md5": "ABC"}, "digest_md5"),
    ({"type": "http", "status_codes": ["600"]}, "status codes"),
    ({"type": "send_expect", "expect": "(", "regex": True}, "unterminated"),
])
def test_bad_tables_are_rejected(table, message):
    with pytest.raises(Exception, match=message):
        check_from_table(table)


def test_status_code_ranges():
    assert parse_status_codes([200, "301-303"]) == (200, 301, 302, 303)


def test_sorry_server_must_differ_from_reals():
    real = RealServer("10.0.0.1", 80)
    with pytest.raises(ValueError):
        ServiceHealth(service=VirtualService("tcp", "10.0.0.100", 80, reals=(real,)), sorry_server=real)
