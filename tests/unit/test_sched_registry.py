"""The registry, and schedulers driven the way the engine drives them."""

from __future__ import annotations

import pytest

from userlb import sched
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.services import DestTable, ip_to_int

NAMES = ["dh", "fo", "lblc", "lblcr", "lc", "mh", "nq", "ovf", "rr", "sed", "sh", "twos", "wlc",
         "wrr"]


def test_all_fourteen_are_available():
    assert sched.available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_create_by_name(name):
    s = sched.create(name)
    assert isinstance(s, BaseScheduler) and s.name == name
    d = DestTable.build([ip_to_int("198.18.1.1")], [80], [5])
    s.dests_changed(d)
    f = Flow(6, ip_to_int("198.18.100.1"), 1000, ip_to_int("198.18.0.1"), 80)
    assert s.schedule(d, f, 0.0) == 0
    assert s.schedule_batch(d, FlowBatch.from_flows([f] * 3), 0.0).tolist() == [0, 0, 0]
    s.expire(10.0)
    empty = DestTable()
    s.dests_changed(empty)
    assert s.schedule(empty, f, 11.0) == NO_DEST
    assert s.schedule_batch(empty, FlowBatch.from_flows([f]), 11.0).tolist() == [NO_DEST]


def test_unknown_name():
    with pytest.raises(KeyError, match="known: dh, fo"):
        sched.create("nope")


def test_rr_called_only_on_template_misses():
    """§6.15: the engine consults the scheduler only without a valid template."""
    a, b = ip_to_int("198.18.1.1"), ip_to_int("198.18.1.2")
    d = DestTable.build([a, b], [443, 443], [1, 1])
    s = sched.create("rr")
    s.dests_changed(d)
    templates: dict[int, int] = {}
    got = []
    for client, weight_a in (("198.18.100.1", 1), ("198.18.100.2", 1), ("198.18.101.1", 1),
                             ("198.18.100.3", 0)):
        d.edit(0, weight=weight_a)
        s.dests_changed(d)
        snet = ip_to_int(client) & 0xFFFFFF00
        if snet not in templates:
            templates[snet] = s.schedule(d, Flow(6, ip_to_int(client), 1000, 1, 443), 0.0)
        got.append(templates[snet])
    assert got == [0, 0, 1, 0]                      # A, A (template), B, A (quiesced but held)
    d.edit(0, weight=1)
    assert s.schedule(d, Flow(6, 9, 9, 1, 443), 0.0) == 0   # the cursor stayed on B
