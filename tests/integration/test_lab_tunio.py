"""`[router] io` and `[router] queues` end to end in the namespace lab.

The balancer with each TUN I/O mode and with two TUN queues (one data-path thread
each over one engine): HTTP through the VIP reaches every real server, a download
arrives intact, UDP echo works, and the log names the I/O each worker opened (no
silent fallback on this kernel). The default, "auto", is what every other lab test
runs.
"""

from __future__ import annotations

import collections

import pytest

from userlb import ctlclient
from userlb.lab import ECHO_PORT, VIP, Lab

pytestmark = [pytest.mark.root, pytest.mark.tun]

CONFIGS = {
    "read-no-offload": ('io = "read"\noffload = false', ["userlb-datapath: TUN I/O read"]),
    "uring-no-offload": ('io = "uring"\noffload = false', ["userlb-datapath: TUN I/O uring"]),
    "uring-2-queues": ('io = "uring"\nqueues = 2',
                       ["userlb-datapath0: TUN I/O uring", "userlb-datapath1: TUN I/O uring"]),
    "sqpoll": ('io = "sqpoll"', ["userlb-datapath: TUN I/O sqpoll"]),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_balancer_forwards_with_io_mode(name):
    extra, expected_logs = CONFIGS[name]
    with Lab(servers=3) as lab:
        balancer = lab.start_balancer(lab.config_text(scheduler="rr", extra=extra))
        served = collections.Counter(lab.http_get("/", client=0, port=0)[1]["x-server"]
                                     for _ in range(12))
        assert set(served) == {"rs1", "rs2", "rs3"}
        status, _, body = lab.http_get("/bytes/5000000", timeout_s=20)
        assert status == 200 and body == bytes(5_000_000)
        for i, (peer, _, echoed) in enumerate(lab.udp_echo(5)):
            assert peer == (VIP, ECHO_PORT) and echoed == b"hello %d" % i
        datapath = ctlclient.request(balancer.ctl_path, "stats")["datapath"]
        if "read" in name:                     # no io_uring, no multishot READ to count
            assert (datapath["read_rearms"], datapath["read_errors"]) == (0, 0)
        else:                                  # one READ per worker at least, none failed
            assert datapath["read_rearms"] >= len(expected_logs)
            assert datapath["read_errors"] == 0
        log = balancer.log()
        for line in expected_logs:
            assert line in log, log
