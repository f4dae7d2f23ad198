"""userlb: an LVS-NAT load balancer in user space.

The packet path reads IPv4 datagrams from a TUN device, NATs them through a
vectorised connection table and writes them back. This package holds the
sans-I/O core (parse, checksum, nat, conntable, tcpstate, services, engine) and
the thin I/O edges (tun, worker, plumbing, lab, demo, cli). Schedulers live in
userlb.sched (folder sched/), health checks in userlb.health, HA in userlb.ha,
benchmarks in userlb.bench.
"""

__version__ = "0.1.0"
