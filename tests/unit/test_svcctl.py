"""Services added, edited and deleted at run time."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from userlb import svcctl
from userlb.drops import DropReason
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService

VIP = "198.18.1.100"
WEB = VirtualService("tcp", VIP, 80, "rr", (RealServer("198.18.2.11", 8080),
                                             RealServer("198.18.2.12", 8080)))
SSH = VirtualService("tcp", VIP, 22, "rr", (RealServer("198.18.2.13", 22),))


def send(eng, dport, sport, flags="S"):
    batch = FrameBatch.from_frames([bytes(IP(src="198.18.1.2", dst=VIP) /
                                          TCP(sport=sport, dport=dport, flags=flags))])
    v = eng.process(batch, 0)
    return [IP(batch.buf[r, :n].tobytes()).dst for r, n in zip(v.rows, v.lengths)]


def test_add_then_delete_service():
    eng = Engine([WEB])
    assert send(eng, 22, 1) == [] and eng.drops[DropReason.NO_SERVICE] == 1
    idx = svcctl.add_service(eng, SSH)
    assert send(eng, 22, 2) == ["198.18.2.13"]
    with pytest.raises(ValueError):
        svcctl.add_service(eng, SSH)
    svcctl.delete_service(eng, idx)
    assert send(eng, 22, 2, "A") == [] and eng.drops[DropReason.DEST_GONE] == 1
    assert send(eng, 22, 3) == [] and eng.drops[DropReason.NO_SERVICE] == 2
    assert send(eng, 80, 4) == ["198.18.2.12"]              # the other service is untouched


def test_edit_scheduler_keeps_servers_and_connections():
    eng = Engine([WEB])
    first = send(eng, 80, 1)
    svcctl.edit_service(eng, 0, VirtualService("tcp", VIP, 80, "wlc", WEB.reals))
    assert eng.services[0].scheduler.name == "wlc"
    assert send(eng, 80, 1, "A") == first                   # existing connection kept
    assert send(eng, 80, 2) != first                        # wlc: the idle server
    assert int(eng.services[0].dests.activeconns.sum()) == 2
