"""`userlb adm` against a live engine: golden ipvsadm 1.31 listings after sequences of
commands (every scheduler, flags, persistence, fwmark, real traffic), -S/-R round trips,
--set/--timeout, -Z, and ipvsadm's operation errors."""

from __future__ import annotations

import shlex

import pytest
from scapy.layers.inet import IP, TCP, UDP

from userlb import admexec, svcctl
from userlb.admexec import AdmOutput, run
from userlb.engine import Engine
from userlb.estimator import Estimator
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService

CLIENT = "198.18.100.1"


def adm(eng, line: str, now: float = 0.0, stdin: str | None = None,
        est: Estimator | None = None) -> AdmOutput:
    return run(eng, shlex.split(line), now, stdin=stdin, rates=est)


def ok(eng, *lines: str, est: Estimator | None = None) -> None:
    for line in lines:
        result = adm(eng, line, est=est)
        assert result.exit_code == 0, (line, result)


def send(eng, frames, now: float) -> list[str]:
    batch = FrameBatch.from_frames([bytes(f) for f in frames])
    v = eng.process(batch, now)
    return [IP(batch.buf[r, :n].tobytes()).dst for r, n in zip(v.rows, v.lengths)]


def syn(sport: int, dport: int = 80, src: str = CLIENT):
    return IP(src=src, dst="198.18.0.1") / TCP(sport=sport, dport=dport, flags="S")


# -- every scheduler, scheduler flags, persistence and fwmark -----------------------------

ALL = ["-A -t 198.18.0.1:80 -s rr",
       "-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m",
       "-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 3 -x 100 -y 50",
       *(line for i, s in enumerate(("wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos",
                                     "lblc", "lblcr", "dh"))
         for line in (f"-A -t 198.18.0.2:{8001 + i} -s {s}",
                      f"-a -t 198.18.0.2:{8001 + i} -r 198.18.2.{i + 1}:80 -m -w {i + 1}")),
       "-A -t 198.18.0.1:443 -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0",
       "-a -t 198.18.0.1:443 -r 198.18.1.1 -m",
       "-A -u 198.18.0.1:53 -s mh -b mh-port",
       "-a -u 198.18.0.1:53 -r 198.18.1.3 -m -w 2",
       "-A -f 7 -s lblcr -p",
       "-a -f 7 -r 198.18.1.4:0 -m -w 2",
       "-A -t 198.18.0.3:0 -s wlc -p 60"]

ALL_LISTING = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port Scheduler Flags\n'
    '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n'
    'TCP  198.18.0.1:80 rr\n'
    '  -> 198.18.1.1:8080              Masq    1      0          0         \n'
    '  -> 198.18.1.2:8080              Masq    3      0          0         \n'
    'TCP  198.18.0.1:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\n'
    '  -> 198.18.1.1:443               Masq    1      0          0         \n'
    'TCP  198.18.0.2:8001 wrr\n'
    '  -> 198.18.2.1:80                Masq    1      0          0         \n'
    'TCP  198.18.0.2:8002 lc\n'
    '  -> 198.18.2.2:80                Masq    2      0          0         \n'
    'TCP  198.18.0.2:8003 wlc\n'
    '  -> 198.18.2.3:80                Masq    3      0          0         \n'
    'TCP  198.18.0.2:8004 sed\n'
    '  -> 198.18.2.4:80                Masq    4      0          0         \n'
    'TCP  198.18.0.2:8005 nq\n'
    '  -> 198.18.2.5:80                Masq    5      0          0         \n'
    'TCP  198.18.0.2:8006 fo\n'
    '  -> 198.18.2.6:80                Masq    6      0          0         \n'
    'TCP  198.18.0.2:8007 ovf\n'
    '  -> 198.18.2.7:80                Masq    7      0          0         \n'
    'TCP  198.18.0.2:8008 twos\n'
    '  -> 198.18.2.8:80                Masq    8      0          0         \n'
    'TCP  198.18.0.2:8009 lblc\n'
    '  -> 198.18.2.9:80                Masq    9      0          0         \n'
    'TCP  198.18.0.2:8010 lblcr\n'
    '  -> 198.18.2.10:80               Masq    10     0          0         \n'
    'TCP  198.18.0.2:8011 dh\n'
    '  -> 198.18.2.11:80               Masq    11     0          0         \n'
    'TCP  198.18.0.3:0 wlc persistent 60\n'
    'UDP  198.18.0.1:53 mh (mh-port)\n'
    '  -> 198.18.1.3:53                Masq    2      0          0         \n'
    'FWM  7 lblcr persistent 360\n'
    '  -> 198.18.1.4:0                 Masq    2      0          0         \n'
)

ALL_SAVE = (
    '-A -t 198.18.0.1:80 -s rr\n'
    '-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 1\n'
    '-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 3\n'
    '-A -t 198.18.0.1:443 -s sh -p 600 -M 255.255.255.0 -b sh-fallback,sh-port\n'
    '-a -t 198.18.0.1:443 -r 198.18.1.1:443 -m -w 1\n'
    + "".join(f'-A -t 198.18.0.2:{8001 + i} -s {s}\n'
              f'-a -t 198.18.0.2:{8001 + i} -r 198.18.2.{i + 1}:80 -m -w {i + 1}\n'
              for i, s in enumerate(("wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos",
                                     "lblc", "lblcr", "dh")))
    + '-A -t 198.18.0.3:0 -s wlc -p 60\n'
    '-A -u 198.18.0.1:53 -s mh -b mh-port\n'
    '-a -u 198.18.0.1:53 -r 198.18.1.3:53 -m -w 2\n'
    '-A -f 7 -s lblcr -p 360\n'
    '-a -f 7 -r 198.18.1.4:0 -m -w 2\n'
)


def test_every_scheduler_flags_persistence_and_fwmark():
    eng = Engine([], table_size=4096)
    ok(eng, *ALL)
    assert adm(eng, "-Ln").stdout == ALL_LISTING
    assert adm(eng, "-L").stdout == ALL_LISTING          # always numeric
    assert adm(eng, "-S -n").stdout == ALL_SAVE
    assert [rt.scheduler.name for rt in eng.services if rt][-4:] == ["sh", "mh", "lblcr", "wlc"]


def test_save_then_restore_round_trip():
    eng = Engine([], table_size=4096)
    ok(eng, *ALL)
    saved = adm(eng, "-S").stdout
    fresh = Engine([], table_size=4096)
    text = "\n".join(f"ipvsadm {line}" if i % 2 else line
                     for i, line in enumerate(saved.splitlines())) + "\n\n   \n"
    restored = adm(fresh, "-R", stdin=text)
    assert restored.exit_code == 0 and restored.stdout == ""
    assert "fwmark service 7 has no match rules" in restored.stderr
    assert adm(fresh, "-S -n").stdout == saved
    assert adm(fresh, "-Ln").stdout == ALL_LISTING
    assert adm(fresh, "-L -n --thresholds -t 198.18.0.1:80").stdout.splitlines()[-1] == (
        '  -> 198.18.1.2:8080              0          0          0          0         ')
    assert adm(eng, "-C").exit_code == 0 and adm(eng, "-R", stdin=saved).exit_code == 0
    assert adm(eng, "-S -n").stdout == saved


# -- listings with traffic ------------------------------------------------------------------

TRAFFIC = ["-A -t 198.18.0.1:80 -s rr",
           "-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m",
           "-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 3 -x 100 -y 50",
           "-A -t 198.18.0.1:443 -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0",
           "-a -t 198.18.0.1:443 -r 198.18.1.1 -m",
           "-A -u 198.18.0.1:53 -s mh -b mh-port",
           "-a -u 198.18.0.1:53 -r 198.18.1.3 -m -w 2"]


@pytest.fixture
def busy():
    """Four TCP connections to :80 (rr: .2, .1, .2, .1), one to :443 (persistent), one UDP
    flow to :53; the estimator started at 0 s and stepped at 2 s."""
    eng, est = Engine([], table_size=4096), Estimator()
    ok(eng, *TRAFFIC, est=est)
    est.tick(eng, 0.0)
    assert send(eng, [syn(40000 + i) for i in range(4)], 0.5) == ["198.18.1.2", "198.18.1.1"] * 2
    assert send(eng, [IP(src="198.18.100.2", dst="198.18.0.1") / UDP(sport=5353, dport=53)
                      / (b"x" * 20)], 1.0) == ["198.18.1.3"]
    assert send(eng, [syn(1000, 443, "198.18.100.2")], 1.0) == ["198.18.1.1"]
    est.tick(eng, 2.0)
    return eng, est


BUSY_PLAIN = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port Scheduler Flags\n'
    '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n'
    'TCP  198.18.0.1:80 rr\n'
    '  -> 198.18.1.1:8080              Masq    1      2          0         \n'
    '  -> 198.18.1.2:8080              Masq    3      2          0         \n'
    'TCP  198.18.0.1:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\n'
    '  -> 198.18.1.1:443               Masq    1      1          0         \n'
    'UDP  198.18.0.1:53 mh (mh-port)\n'
    '  -> 198.18.1.3:53                Masq    2      0          1         \n'
)
BUSY_STATS = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80                       4        4        0      160        0\n'
    '  -> 198.18.1.1:8080                     2        2        0       80        0\n'
    '  -> 198.18.1.2:8080                     2        2        0       80        0\n'
    'TCP  198.18.0.1:443                      1        1        0       40        0\n'
    '  -> 198.18.1.1:443                      1        1        0       40        0\n'
    'UDP  198.18.0.1:53                       1        1        0       48        0\n'
    '  -> 198.18.1.3:53                       1        1        0       48        0\n'
)
# one step: 160 B in 2 s → avg = (160 << 4) >> 2 = 640 → (640 + 15) >> 5 = 20 B/s;
# 4 conns → avg 512 → (512 + 511) >> 10 = 0 cps
BUSY_RATE = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80                       0        0        0       20        0\n'
    '  -> 198.18.1.1:8080                     0        0        0       10        0\n'
    '  -> 198.18.1.2:8080                     0        0        0       10        0\n'
    'TCP  198.18.0.1:443                      0        0        0        5        0\n'
    '  -> 198.18.1.1:443                      0        0        0        5        0\n'
    'UDP  198.18.0.1:53                       0        0        0        6        0\n'
    '  -> 198.18.1.3:53                       0        0        0        6        0\n'
)
BUSY_CONNS = (
    'IPVS connection entries\n'
    'pro expire state       source             virtual            destination\n'
    'TCP 00:58  SYN_RECV    198.18.100.1:40000 198.18.0.1:80      198.18.1.2:8080\n'
    'TCP 00:58  SYN_RECV    198.18.100.1:40001 198.18.0.1:80      198.18.1.1:8080\n'
    'TCP 00:58  SYN_RECV    198.18.100.1:40002 198.18.0.1:80      198.18.1.2:8080\n'
    'TCP 00:58  SYN_RECV    198.18.100.1:40003 198.18.0.1:80      198.18.1.1:8080\n'
    'UDP 04:59  UDP         198.18.100.2:5353  198.18.0.1:53      198.18.1.3:53\n'
    'TCP 09:59  NONE        198.18.100.0:0     198.18.0.1:443     198.18.1.1:443\n'
    'TCP 00:59  SYN_RECV    198.18.100.2:1000  198.18.0.1:443     198.18.1.1:443\n'
)
BUSY_PERSISTENT = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80 rr\n'
    '  -> 198.18.1.1:8080              1         0           2          0         \n'
    '  -> 198.18.1.2:8080              3         0           2          0         \n'
    'TCP  198.18.0.1:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\n'
    '  -> 198.18.1.1:443               1         1           1          0         \n'
    'UDP  198.18.0.1:53 mh (mh-port)\n'
    '  -> 198.18.1.3:53                2         0           0          1         \n'
)
BUSY_THRESHOLDS = (
    'IP Virtual Server version 1.2.1 (size=4096)\n'
    'Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n'
    '  -> RemoteAddress:Port\n'
    'TCP  198.18.0.1:80 rr\n'
    '  -> 198.18.1.1:8080              0          0          2          0         \n'
    '  -> 198.18.1.2:8080              100        50         2          0         \n'
    'TCP  198.18.0.1:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\n'
    '  -> 198.18.1.1:443               0          0          1          0         \n'
    'UDP  198.18.0.1:53 mh (mh-port)\n'
    '  -> 198.18.1.3:53                0          0          0          1         \n'
)


@pytest.mark.parametrize("line, golden", [
    ("-Ln", BUSY_PLAIN), ("-L -n --stats", BUSY_STATS), ("-l --stats --exact", BUSY_STATS),
    ("-L -n --rate", BUSY_RATE), ("-L -n --stats --rate", BUSY_STATS),
    ("-Lnc", BUSY_CONNS), ("-L -n --persistent-conn", BUSY_PERSISTENT),
    ("-L -n --thresholds", BUSY_THRESHOLDS), ("-L -n --thresholds --persistent-conn",
                                              BUSY_THRESHOLDS),
])
def test_golden_listings_with_traffic(busy, line, golden):
    eng, est = busy
    assert adm(eng, line, now=2.0, est=est) == AdmOutput(0, golden, "")


def test_one_service_and_other_list_variants(busy):
    eng, est = busy
    one = adm(eng, "-L -n -t 198.18.0.1:443", now=2.0, est=est).stdout
    assert one == (
        'Prot LocalAddress:Port Scheduler Flags\n'
        '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n'
        'TCP  198.18.0.1:443 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0\n'
        '  -> 198.18.1.1:443               Masq    1      1          0         \n')
    assert adm(eng, "-L -n --stats -u 198.18.0.1:53", now=2.0, est=est).stdout == (
        'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n'
        '  -> RemoteAddress:Port\n'
        'UDP  198.18.0.1:53                       1        1        0       48        0\n'
        '  -> 198.18.1.3:53                       1        1        0       48        0\n')
    conns = adm(eng, "-Lnc --persistent-conn", now=2.0, est=est).stdout.splitlines()
    assert conns[1] == ('pro expire state       source             virtual            '
                        'destination        pe name          pe_data')
    assert conns[2:] == BUSY_CONNS.splitlines()[2:]
    assert adm(eng, "-L --daemon") == AdmOutput(0, "", "")
    assert adm(eng, "-L -n -t 198.18.0.9:80") == AdmOutput(1, "", "No such service\n")
    tun = adm(eng, "-L -n --tun-info -t 198.18.0.1:80", est=est).stdout.splitlines()
    assert tun[1] == ('  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn '
                      'InActConn')
    assert tun[3] == ('  -> 198.18.1.1:8080              Masq    n/a           1      2          '
                      '0         ')


def test_nosort_keeps_engine_and_scan_order(busy):
    eng, est = busy
    plain = adm(eng, "-L -n --nosort", est=est).stdout.splitlines()
    assert plain[3:6] == ['TCP  198.18.0.1:80 rr',
                          '  -> 198.18.1.2:8080              Masq    3      2          0         ',
                          '  -> 198.18.1.1:8080              Masq    1      2          0         ']
    assert adm(eng, "-S -n --nosort").exit_code == 2         # -S takes -n only


def test_exact_and_large_numbers():
    eng = Engine([], table_size=4096)
    ok(eng, "-A -t 198.18.0.1:80", "-a -t 198.18.0.1:80 -r 198.18.1.1:80 -m")
    d = eng.services[0].dests
    d.inbytes[0], d.outbytes[0], d.inpkts[0] = 123456789, 2345678901, 99999999
    short = adm(eng, "-L -n --stats").stdout.splitlines()[-1]
    assert short == '  -> 198.18.1.1:80                       0 99999999        0  123456K    2345M'
    exact = adm(eng, "-L -n --stats --exact").stdout.splitlines()[-1]
    assert exact == ('  -> 198.18.1.1:80                       0 99999999        0 123456789 '
                     '2345678901')           # --exact: max(9, digits + 1) columns


# -- changes ---------------------------------------------------------------------------------

def test_edit_service_and_server_replace_unspecified_fields():
    eng = Engine([], table_size=4096)
    ok(eng, "-A -t 198.18.0.1:80 -s sh -b sh-port -p 600 -M 255.255.0.0",
         "-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 5 -x 10 -y 5",
         "-E -t 198.18.0.1:80",
         "-e -t 198.18.0.1:80 -r 198.18.1.1:8080")
    assert adm(eng, "-S").stdout == ('-A -t 198.18.0.1:80 -s wlc\n'
                                     '-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 1\n')
    assert eng.services[0].scheduler.name == "wlc"
    d = eng.services[0].dests
    assert (int(d.u_threshold[0]), int(d.l_threshold[0])) == (0, 0)
    ok(eng, "-e -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 0")
    assert int(d.weight[0]) == 0 and int(d.last_weight[0]) == 1


def test_delete_server_service_and_clear():
    eng = Engine([], table_size=4096)
    ok(eng, *TRAFFIC)
    ok(eng, "-d -t 198.18.0.1:80 -r 198.18.1.2:8080", "-D -u 198.18.0.1:53")
    assert adm(eng, "-S").stdout == ('-A -t 198.18.0.1:80 -s rr\n'
                                     '-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 1\n'
                                     '-A -t 198.18.0.1:443 -s sh -p 600 -M 255.255.255.0 '
                                     '-b sh-fallback,sh-port\n'
                                     '-a -t 198.18.0.1:443 -r 198.18.1.1:443 -m -w 1\n')
    ok(eng, "-C")
    assert adm(eng, "-S").stdout == "" and all(rt is None for rt in eng.services)
    assert adm(eng, "-Ln").stdout == ALL_LISTING.split("TCP")[0]


def test_added_service_carries_traffic():
    eng = Engine([], table_size=4096)
    ok(eng, "-A -t 198.18.0.1:80 -s rr", "-a -t 198.18.0.1:80 -r 198.18.1.1 -m")
    assert send(eng, [syn(1)], 0.0) == ["198.18.1.1"]


@pytest.mark.parametrize("line, message", [
    ("-A -t 198.18.0.1:80", "Service already exists"),
    ("-A -t 198.18.0.1:81 -s bogus", "Scheduler or persistence engine not found"),
    ("-E -t 198.18.0.1:80 -s bogus", "Scheduler or persistence engine not found"),
    ("-E -t 198.18.0.9:80", "No such service"),
    ("-D -t 198.18.0.9:80", "No such service"),
    ("-Z -t 198.18.0.9:80", "No such service"),
    ("-a -t 198.18.0.9:80 -r 198.18.1.1 -m", "Service not defined"),
    ("-e -t 198.18.0.9:80 -r 198.18.1.1 -m", "Service not defined"),
    ("-d -t 198.18.0.9:80 -r 198.18.1.1", "Service not defined"),
    ("-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m", "Destination already exists"),
    ("-e -t 198.18.0.1:80 -r 198.18.1.9 -m", "No such destination"),
    ("-d -t 198.18.0.1:80 -r 198.18.1.1", "No such destination"),   # port 80 ≠ 8080
    ("-a -t 198.18.0.1:80 -r 198.18.1.9 -m -y 5", "Numerical result out of range"),
    ("-e -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -x 5 -y 6", "Numerical result out of range"),
])
def test_operation_errors(line, message):
    eng = Engine([], table_size=4096)
    ok(eng, *TRAFFIC)
    before = adm(eng, "-S").stdout
    assert adm(eng, line) == AdmOutput(255, "", message + "\n")
    assert adm(eng, "-S").stdout == before


def test_option_errors_come_back_with_status_2():
    eng = Engine([], table_size=4096)
    assert adm(eng, "-A -t 198.18.0.1") == AdmOutput(
        2, "", "Zero port specified for non-persistent service\n")
    assert adm(eng, "-a -t 198.18.0.1:80 -r 198.18.1.1 -g").stderr.startswith(
        "userlb supports NAT (-m) only")


def test_set_and_timeout():
    eng = Engine([], table_size=4096)
    assert adm(eng, "-L --timeout").stdout == "Timeout (tcp tcpfin udp): 900 120 300\n"
    ok(eng, "--set 3600 0 30")
    assert adm(eng, "-L --timeout").stdout == "Timeout (tcp tcpfin udp): 3600 120 30\n"
    assert eng.timeouts.established_s == 3600 and eng.timeout_of[1] == 3600
    ok(eng, "-A -u 198.18.0.1:53", "-a -u 198.18.0.1:53 -r 198.18.1.3 -m")
    send(eng, [IP(src=CLIENT, dst="198.18.0.1") / UDP(sport=1, dport=53)], 10.0)
    assert adm(eng, "-Lnc", now=10.0).stdout.splitlines()[2].startswith("UDP 00:30  UDP")


def test_zero_one_service_then_all(busy):
    eng, est = busy
    ok(eng, "-Z -t 198.18.0.1:80", est=est)
    stats = adm(eng, "-L -n --stats", now=2.0, est=est).stdout
    assert stats.splitlines()[3:6] == [
        'TCP  198.18.0.1:80                       0        0        0        0        0',
        '  -> 198.18.1.1:8080                     0        0        0        0        0',
        '  -> 198.18.1.2:8080                     0        0        0        0        0']
    assert stats.splitlines()[6:] == BUSY_STATS.splitlines()[6:]
    assert adm(eng, "-L -n --rate", now=2.0, est=est).stdout.splitlines()[3] == (
        'TCP  198.18.0.1:80                       0        0        0        0        0')
    assert int(eng.services[0].dests.conns.sum()) == 4          # raw counters untouched
    send(eng, [syn(50000)], 3.0)
    assert adm(eng, "-L -n --stats", now=3.0, est=est).stdout.splitlines()[3] == (
        'TCP  198.18.0.1:80                       1        1        0       40        0')
    ok(eng, "-Z", est=est)
    assert all(line.split()[-5:] == ["0"] * 5 for line in
               adm(eng, "-L -n --stats", now=3.0, est=est).stdout.splitlines()[3:])


def test_restore_stops_at_an_option_error_and_goes_on_after_operation_errors():
    eng = Engine([], table_size=4096)
    rules = ("-A -t 198.18.0.1:80 -s rr\n"
             "-A -t 198.18.0.1:80 -s rr\n"                 # Service already exists: go on
             "-a -t 198.18.0.1:80 -r 198.18.1.1 -m\n"
             "-Ln\n")
    out = adm(eng, "-R", stdin=rules)
    assert out.exit_code == 0 and out.stderr == "Service already exists\n"  # last line's status
    assert out.stdout.endswith("  -> 198.18.1.1:80                Masq    1      0          0"
                               "         \n")
    out = adm(eng, "-R", stdin="-A -t 198.18.0.2:80\n-A -t 198.18.0.2:81\n-A -t 198.18.0.3\n"
                               "-A -t 198.18.0.4:80\n")
    assert out == AdmOutput(2, "", "Zero port specified for non-persistent service\n")
    assert svcctl.find_service(eng, (6, 0xC6120002, 81)) >= 0
    assert svcctl.find_service(eng, (6, 0xC6120004, 80)) < 0
    assert adm(eng, "-R", stdin="-R\n").exit_code == 255
    assert adm(eng, "-R", stdin="-a -t 198.18.0.9:80 -r 198.18.1.1 -m\n") == AdmOutput(
        255, "", "Service not defined\n")
    assert adm(eng, "-R") == AdmOutput(0, "", "")


def test_fwmark_service_keeps_its_match_rules_on_edit():
    svc = VirtualService("tcp", "0.0.0.0", 0, "rr", (RealServer("198.18.1.4", 0),), fwmark=7,
                         match=(("tcp", "198.18.0.1", 80),))
    eng = Engine([svc], table_size=4096)
    ok(eng, "-E -f 7 -s wrr -p 30")
    cfg = eng.services[0].config
    assert (cfg.scheduler, cfg.persistent_s, cfg.match) == ("wrr", 30,
                                                            (("tcp", "198.18.0.1", 80),))
    assert send(eng, [syn(7)], 0.0) == ["198.18.1.4"]
    added = adm(eng, "-A -f 8")
    assert added.exit_code == 0 and "no match rules" in added.stderr
    assert eng.services[1].config.match == ()


def test_help_and_version():
    eng = Engine([], table_size=4096)
    help_text = adm(eng, "-h")
    assert help_text.exit_code == 0 and "  --add-service     -A" in help_text.stdout
    assert "rr|wrr|lc|wlc" in help_text.stdout
    assert adm(eng, "--version") == AdmOutput(
        0, "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n", "")


def test_execute_takes_a_parsed_command_and_the_default_estimator():
    from userlb.admparse import parse
    eng = Engine([], table_size=4096)
    assert admexec.execute(eng, parse(["-A", "-t", "198.18.0.1:80"]), 0.0).exit_code == 0
    assert admexec.execute(eng, parse(["-Z"]), 0.0) == AdmOutput(0, "", "")


def test_new_modules_stay_sans_io():
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    forbidden = {"socket", "asyncio", "pytun", "pyroute2", "time", "select", "subprocess",
                 "threading", "uvloop"}
    for name in ("admpopt", "admcheck", "admparse", "admhelp", "admexec", "estimator", "metrics"):
        tree = ast.parse((root / "userlb" / f"{name}.py").read_text())
        used = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
        used |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert used & forbidden == set(), name
