"""Reload: config.diff applied to a running engine keeps connections and counters."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from userlb import reload
from userlb.config import loads
from userlb.configdiff import diff
from userlb.engine import Engine
from userlb.frames import FrameBatch

BASE = '''
[timeouts]
tcp = 900
[[service]]
protocol = "tcp"
vip = "198.18.1.100"
port = 80
scheduler = "rr"
  [[service.real]]
  address = "198.18.2.11"
  port = 8080
  [[service.real]]
  address = "198.18.2.12"
  port = 8080
'''


def send(eng, sport, flags="S", dport=80):
    batch = FrameBatch.from_frames([bytes(IP(src="198.18.1.2", dst="198.18.1.100") /
                                          TCP(sport=sport, dport=dport, flags=flags))])
    v = eng.process(batch, 0)
    return [IP(batch.buf[r, :n].tobytes()).dst for r, n in zip(v.rows, v.lengths)]


def test_reload_applies_changes_and_keeps_connections():
    old = loads(BASE)
    eng = Engine(old.services)
    kept = send(eng, 1)                                  # → .12 (scan order .12, .11)
    new_text = (BASE.replace("tcp = 900", "tcp = 60")
                .replace('  address = "198.18.2.11"\n  port = 8080\n',
                         '  address = "198.18.2.11"\n  port = 8080\n  weight = 0\n')
                + '[[service]]\nprotocol = "udp"\nvip = "198.18.1.100"\nport = 53\n'
                  '  [[service.real]]\n  address = "198.18.2.13"\n')
    lines = reload.apply_changes(eng, diff(old, loads(new_text)))
    assert lines == ["--set 60 120 300", "-A udp 198.18.1.100:53 with 1 real server(s)",
                     "-e 198.18.2.11:8080 weight"]
    assert eng.timeouts.ipvsadm_timeout() == (60, 120, 300)
    assert send(eng, 1, "A") == kept                     # established connection untouched
    assert send(eng, 2) == ["198.18.2.12"] and send(eng, 3) == ["198.18.2.12"]  # .11 weight 0


def test_reload_keeps_health_down_server_at_weight_zero():
    old = loads(BASE)
    eng = Engine(old.services)
    eng.edit_dest(0, "198.18.2.11", 8080, 0)            # health checks quiesced it
    new = loads(BASE.replace('  address = "198.18.2.11"\n  port = 8080\n',
                             '  address = "198.18.2.11"\n  port = 8080\n  weight = 5\n'))
    lines = reload.apply_changes(eng, diff(old, new), is_down=lambda s, r: r[0] & 0xFF == 11)
    assert lines == ["-e 198.18.2.11:8080 weight (down: weight applies on recovery)"]
    assert int(eng.services[0].dests.weight[1]) == 0


def test_removing_one_real_server_keeps_the_service():
    old = loads(BASE)
    eng = Engine(old.services)
    send(eng, 1)
    new = loads(BASE.replace('  [[service.real]]\n  address = "198.18.2.12"\n  port = 8080\n', ''))
    assert reload.apply_changes(eng, diff(old, new)) == ["-d 198.18.2.12:8080"]
    assert send(eng, 2) == ["198.18.2.11"]
