"""Connection sync, engine side: a backup that imports the active router's changes
forwards an established connection to the same real server after takeover."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from userlb import connsync, tcpstate
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService

VIP, CLIENT = "198.18.1.100", "198.18.1.2"
SERVICE = VirtualService("tcp", VIP, 80, "rr",
                         tuple(RealServer(f"198.18.2.{11 + i}", 8080) for i in range(3)))


def send(eng, flags, now, sport=40000):
    batch = FrameBatch.from_frames([bytes(IP(src=CLIENT, dst=VIP) /
                                          TCP(sport=sport, dport=80, flags=flags))])
    v = eng.process(batch, now)
    return [IP(batch.buf[r, :n].tobytes()) for r, n in zip(v.rows, v.lengths)]


def test_backup_continues_established_connection_to_same_server():
    active, backup = Engine([SERVICE]), Engine([SERVICE])
    send(active, "R", 0)                                  # noise: not a connection
    send(active, "S", 0, sport=1)                         # another client: goes to rs3
    first = send(active, "S", 1)[0].dst
    send(active, "A", 2)
    changes = connsync.export_changes(active, now=2)
    assert len(changes) == 2 and connsync.export_changes(active, now=2) == []
    assert connsync.import_entries(backup, changes, now=2) == 2
    out = send(backup, "PA", 3)                           # after takeover
    assert out[0].dst == first
    cid = int(backup.table.lookup_in([6], [0xC6120102], [40000],
                                     [0xC6120164], [80])[0])
    assert tcpstate.STATE_NAMES[backup.table.state[cid]] == "ESTABLISHED"
    d = backup.services[0].dests
    assert int(d.activeconns.sum()) == 2 and int(d.inactconns.sum()) == 0


def test_import_refreshes_existing_entry_without_double_counting():
    active, backup = Engine([SERVICE]), Engine([SERVICE])
    send(active, "S", 0)
    connsync.import_entries(backup, connsync.export_changes(active, 0), 0)
    send(active, "A", 1)
    send(active, "FA", 2)                                 # CLOSE_WAIT: inactive
    connsync.import_entries(backup, connsync.export_changes(active, 2), 2)
    d = backup.services[0].dests
    assert (int(d.activeconns.sum()), int(d.inactconns.sum())) == (0, 1)
    assert len(backup.table) == 1
