"""ipvsadm 1.31 listings byte for byte: every example of spec ipvs.md §4.3 and §4.4.

The golden strings are the spec's blocks verbatim, trailing spaces included
(written out as string literals so no editor can strip them).
"""

from __future__ import annotations

import pytest

from userlb.listing import (ConnView, DestView, ServiceView, connections_from_json,
                            format_connections, format_largenum, format_persistent, format_rate,
                            format_save, format_services, format_stats, format_thresholds,
                            format_timeout, services_from_json)

# §4.3/§4.4 example table: given in an unsorted order on purpose (FWM first, servers reversed)
EXAMPLE = [
    ServiceView("tcp", 0, 0, fwmark=7, scheduler="wrr",
                dests=(DestView("198.18.1.4", 0, weight=2),)),
    ServiceView("udp", "198.18.0.1", 53, scheduler="rr", persistent_s=360,
                netmask="255.255.255.0", dests=(DestView("198.18.1.3", 53, inactive=7),)),
    ServiceView("tcp", "198.18.0.1", 80, dests=(
        DestView("198.18.1.2", 8080, weight=3, active=40, inactive=2),
        DestView("198.18.1.1", 80, weight=1, active=12, inactive=130))),
]

PLAIN = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port Scheduler Flags\n'
    '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n'
    'TCP  198.18.0.1:80 wlc\n'
    '  -> 198.18.1.1:80                Masq    1      12         130       \n'
    '  -> 198.18.1.2:8080              Masq    3      40         2         \n'
    'UDP  198.18.0.1:53 rr persistent 360 mask 255.255.255.0\n'
    '  -> 198.18.1.3:53                Masq    1      0          7         \n'
    'FWM  7 wrr\n'
    '  -> 198.18.1.4:0                 Masq    2      0          0         \n'
)

STATS = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80                     152     1830     1650   123456    2345M\n'
    '  -> 198.18.1.1:80                     100     1200     1100    80000    1500M\n'
)

RATE = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80                       3       45       40     3100    52000\n'
    '  -> 198.18.1.1:80                       2       30       27     2000    35000\n'
)

THRESHOLDS = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80 wlc\n'
    '  -> 198.18.1.1:80                1000       600        12         130       \n'
)

PERSISTENT = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:443 rr persistent 360\n'
    '  -> 198.18.1.1:443               1         4           3          9         \n'
)

CONNECTIONS = (
    'IPVS connection entries\n'
    'pro expire state       source             virtual            destination\n'
    'TCP 14:59  ESTABLISHED 198.18.100.1:40312 198.18.0.1:80      198.18.1.1:80\n'
    'TCP 00:59  SYN_RECV    198.18.100.2:51000 198.18.0.1:80      198.18.1.2:8080\n'
    'UDP 04:59  UDP         198.18.100.1:5353  198.18.0.1:53      198.18.1.3:53\n'
    'TCP 05:59  NONE        198.18.100.0:0     198.18.0.1:443     198.18.1.1:443\n'
    'IP  05:59  ASSURED     198.18.100.1:0     0.0.0.7:0          198.18.1.4:0\n'
)

SAVE = (
    '-A -t 198.18.0.1:80 -s wlc\n'
    '-a -t 198.18.0.1:80 -r 198.18.1.1:80 -m -w 1\n'
    '-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 3\n'
    '-A -u 198.18.0.1:53 -s rr -p 360 -M 255.255.255.0\n'
    '-a -u 198.18.0.1:53 -r 198.18.1.3:53 -m -w 1\n'
    '-A -f 7 -s wrr\n'
    '-a -f 7 -r 198.18.1.4:0 -m -w 2\n'
)


def test_plain_listing_matches_spec():
    assert format_services(EXAMPLE, 4096) == PLAIN


def test_addresses_may_be_host_order_integers():
    as_ints = [ServiceView(6, 0xC6120001, 80, dests=(DestView(0xC6120101, 80, active=12,
                                                               inactive=130),))]
    assert format_services(as_ints, 4096).splitlines()[3:] == PLAIN.splitlines()[3:5]


def test_single_service_listing_has_no_version_line():
    text = format_services(EXAMPLE[2:], 4096, with_version=False)
    assert text == "".join(PLAIN.splitlines(keepends=True)[1:6])


def test_nosort_keeps_given_order():
    lines = format_services(EXAMPLE, 4096, sort=False).splitlines()
    assert [line.split()[0] for line in lines[3:]] == [
        "FWM", "->", "UDP", "->", "TCP", "->", "->"]
    assert lines[-2].startswith("  -> 198.18.1.2:8080")


def test_scheduler_flags_on_the_service_line():
    svc = ServiceView("tcp", "198.18.0.1", 80, scheduler="sh", flags=("sh-port", "sh-fallback"))
    line = format_services([svc], 1).splitlines()[3]
    assert line == "TCP  198.18.0.1:80 sh (sh-fallback,sh-port)"
    assert format_save([svc]) == "-A -t 198.18.0.1:80 -s sh -b sh-fallback,sh-port\n"


def test_ops_pe_and_sorting_by_protocol_then_address_then_port():
    svcs = [ServiceView("udp", "198.18.0.1", 53, scheduler="rr", ops=True),
            ServiceView("tcp", "198.18.0.2", 80, persistent_s=60, pe="sip"),
            ServiceView("tcp", "198.18.0.1", 443), ServiceView("tcp", "198.18.0.1", 80)]
    assert format_services(svcs, 1).splitlines()[3:] == [
        "TCP  198.18.0.1:80 wlc", "TCP  198.18.0.1:443 wlc",
        "TCP  198.18.0.2:80 wlc persistent 60 pe sip", "UDP  198.18.0.1:53 rr ops"]
    assert format_save(svcs).splitlines()[2:] == [
        "-A -t 198.18.0.2:80 -s wlc -p 60 --pe sip", "-A -u 198.18.0.1:53 -s rr -o"]


def test_mask_shown_only_when_persistent_and_not_host_mask():
    svc = ServiceView("tcp", "198.18.0.1", 80, netmask="255.255.255.0")
    assert format_services([svc], 1).splitlines()[3] == "TCP  198.18.0.1:80 wlc"
    assert format_save([svc]) == "-A -t 198.18.0.1:80 -s wlc\n"


def test_stats_listing_matches_spec():
    svc = ServiceView("tcp", "198.18.0.1", 80, conns=152, inpkts=1830, outpkts=1650,
                      inbytes=123456, outbytes=2_345_678_901,
                      dests=(DestView("198.18.1.1", 80, conns=100, inpkts=1200, outpkts=1100,
                                      inbytes=80000, outbytes=1_500_000_000),))
    assert format_stats([svc], 4096) == STATS


def test_stats_exact():
    svc = ServiceView("tcp", "198.18.0.1", 80, conns=152, outbytes=2_345_678_901)
    assert format_stats([svc], 4096, exact=True).splitlines()[3] == (
        "TCP  198.18.0.1:80                     152        0        0        0 2345678901")


def test_rate_listing_matches_spec():
    svc = ServiceView("tcp", "198.18.0.1", 80, cps=3, inpps=45, outpps=40, inbps=3100,
                      outbps=52000,
                      dests=(DestView("198.18.1.1", 80, cps=2, inpps=30, outpps=27, inbps=2000,
                                      outbps=35000),))
    assert format_rate([svc], 4096) == RATE


def test_rate_servers_print_packet_rates_plain_and_byte_rates_scaled():
    svc = ServiceView("tcp", "198.18.0.1", 80, inpps=123_456_789,
                      dests=(DestView("198.18.1.1", 80, inpps=123_456_789,
                                      inbps=123_456_789),))
    lines = format_rate([svc], 1).splitlines()
    assert lines[3] == ("TCP  198.18.0.1:80                       0  123456K"
                        "        0        0        0")
    assert lines[4] == ("  -> 198.18.1.1:80                       0 123456789"
                        "        0  123456K        0")


def test_thresholds_listing_matches_spec():
    svc = ServiceView("tcp", "198.18.0.1", 80, dests=(
        DestView("198.18.1.1", 80, u_threshold=1000, l_threshold=600, active=12, inactive=130),))
    assert format_thresholds([svc], 4096) == THRESHOLDS


def test_persistent_conn_listing_matches_spec():
    svc = ServiceView("tcp", "198.18.0.1", 443, scheduler="rr", persistent_s=360, dests=(
        DestView("198.18.1.1", 443, weight=1, persist=4, active=3, inactive=9),))
    assert format_persistent([svc], 4096) == PERSISTENT


def test_connection_listing_matches_spec():
    now = 1000.25
    conns = [
        ConnView("tcp", now + 899.9, "ESTABLISHED", "198.18.100.1", 40312, "198.18.0.1", 80,
                 "198.18.1.1", 80),
        ConnView("tcp", now + 59.5, "SYN_RECV", "198.18.100.2", 51000, "198.18.0.1", 80,
                 "198.18.1.2", 8080),
        ConnView("udp", now + 299, "UDP", "198.18.100.1", 5353, "198.18.0.1", 53,
                 "198.18.1.3", 53),
        ConnView(6, now + 359.99, "NONE", "198.18.100.0", 0, "198.18.0.1", 443,
                 "198.18.1.1", 443),
        ConnView(0, now + 359, "ASSURED", "198.18.100.1", 0, 7, 0, "198.18.1.4", 0),
    ]
    assert format_connections(conns, now) == CONNECTIONS


def test_connection_expiry_truncates_and_never_goes_negative():
    conn = ConnView("udp", 10.0, "UDP", "198.18.100.1", 1, "198.18.0.1", 53, "198.18.1.3", 53)
    assert format_connections([conn], 11.0).splitlines()[2].startswith("UDP 00:00  UDP")
    long = ConnView("tcp", 2678400, "NONE", "198.18.100.0", 0, "198.18.0.1", 0, "198.18.1.1", 0)
    assert format_connections([long]).splitlines()[2].startswith("TCP 44640:00 NONE")


def test_save_matches_spec():
    assert format_save(EXAMPLE) == SAVE


def test_timeout():
    assert format_timeout(900, 120, 300) == "Timeout (tcp tcpfin udp): 900 120 300\n"


@pytest.mark.parametrize("value, text", [
    (0, "        0"),
    (99_999_999, " 99999999"),
    (100_000_000, "  100000K"),
    (999_999_999, "  999999K"),
    (1_000_000_000, "    1000M"),
    (99_999_999_999, "   99999M"),
    (100_000_000_000, "     100G"),
    (99_999_999_999_999, "   99999G"),
    (100_000_000_000_000, "     100T"),
])
def test_largenum_thresholds(value, text):
    assert format_largenum(value) == text
    assert len(text) == 9


@pytest.mark.parametrize("value, text", [
    (0, "        0"), (12_345_678, " 12345678"), (123_456_789, " 123456789"),
    (2**64 - 1, " 18446744073709551615"),
])
def test_largenum_exact(value, text):
    assert format_largenum(value, exact=True) == text


def test_from_json_round_trip_ignores_extra_keys():
    data = [{"protocol": "TCP", "vip": "198.18.0.1", "port": 80, "scheduler": "wlc",
             "flags": [], "persistent_s": 0, "netmask": "255.255.255.255",
             "dests": [{"address": "198.18.1.1", "port": 80, "weight": 1, "active": 12,
                        "inactive": 130, "overloaded": False}]}]
    text = format_services(services_from_json(data), 4096)
    assert text.splitlines()[3:] == PLAIN.splitlines()[3:5]
    conns = connections_from_json([{"id": 3, "protocol": "UDP", "expires_s": 299.7,
                                    "state": "UDP", "caddr": "198.18.100.1", "cport": 5353,
                                    "vaddr": "198.18.0.1", "vport": 53,
                                    "daddr": "198.18.1.3", "dport": 53}])
    assert format_connections(conns).splitlines()[2] == CONNECTIONS.splitlines()[4]
