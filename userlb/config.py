"""The native TOML configuration: text → `Config`, or every mistake as `path:line: message`.

What it does: parses with tomllib, checks every key an operator can get wrong and
collects *all* problems (not just the first) into one `ConfigError`, each pointing at
the line of the offending key, or at the table header when a key is missing
(`tomllines.KeyLines` supplies the lines tomllib does not). `diff(old, new)` (from
`configdiff`) lists what a reload changes. What it does not do: apply anything. A
config that fails to load leaves the running one in force (style rule 12).

It mirrors ipvsadm's checks and words where they exist: weight 0..65535, thresholds
0..INT_MAX with the kernel's "lower threshold is higher than upper threshold",
"Zero port specified for non-persistent service", persistence 1..2678400 s (31 days),
`--set tcp tcpfin udp` timeouts 0..2678400 s where 0 keeps the current value, and
`sh-*`/`mh-*` scheduler flags only with `sh`/`mh` ("incompatible scheduler flag").

Schema (docs/config.md has a full commented example)::

    [router]                          # optional; every key has a default
    tun = "ulb0"                      # TUN device the balancer creates
    client_interface = "c-rtr"        # faces clients; VIPs answered by proxy ARP here
    server_interface = "br-rs"        # faces real servers; replies policy-routed into the TUN
    table_size = 65536                # connection table capacity, >= 1
    ctl_socket = "/run/userlb.sock"   # control socket path (<= 107 bytes)
    trace_connections = 0             # record the packet flow of the first N connections
    batch_size = 256                  # frames per data-path batch, >= 1
    offload = true                    # TUN virtio offload (TSO/checksum super-packets)
    io = "auto"                       # TUN I/O: "auto" | "read" | "uring" | "sqpoll"
    queues = 1                        # TUN queues, one data-path thread each, 1..64
    metrics = ""                      # "address:port" for Prometheus /metrics; "" = off
    web = ""                          # "address:port" for the web view (HTTP); "" = off
    web_token = ""                    # bearer token for weight changes; "" = read-only
    log_format = "plain"              # "plain" | "json"
    [timeouts]                        # optional; ipvsadm --set semantics, seconds
    tcp = 900                         # ESTABLISHED
    tcpfin = 120                      # FIN_WAIT
    udp = 300                         # UDP
    [[service]]                       # zero or more
    protocol = "tcp"                  # required: "tcp" | "udp"
    vip = "198.18.1.100"              # required: virtual IPv4 address
    port = 80                         # required: 0..65535; 0 only with persistence
    scheduler = "wlc"                 # rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf twos mh
    flags = []                        # sh-fallback sh-port (sh), mh-fallback mh-port (mh)
    persistent = 0                    # persistence timeout in seconds; 0 = off
    persistence_mask = "255.255.255.255"  # client netmask for persistence
    # or, instead of protocol/vip/port, a firewall-mark service:
    # fwmark = 7                      # 1..4294967295 (ipvsadm -f)
    #   [[service.match]]             # one or more: protocol, vip, port (0 = every port)
      [[service.real]]                # zero or more per service
      address = "198.18.2.11"         # required
      port = 8080                     # default: the service port (as ipvsadm -r)
      weight = 1                      # 0..65535; 0 = quiesced
      u_threshold = 0                 # 0..2147483647; 0 = none
      l_threshold = 0                 # 0..u_threshold; 0 = 3/4 of u_threshold
        [[service.real.check]]        # health checks of this real server (docs/health.md)
    [service.health]                  # on_failure, quorum, hysteresis, sorry_server
    [ha]                              # optional: failover of a router pair (userlb/hacheck.py)
"""

from __future__ import annotations

import ast
import inspect
import ipaddress
import re
import textwrap
import tomllib
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING

from .configdiff import (Change, RealAdded, RealEdited, RealRemoved, RouterChanged,
                         ServiceAdded, ServiceChanged, ServiceRemoved, TimeoutsChanged, diff)
from .services import VirtualService
from .tomllines import KeyLines

if TYPE_CHECKING:  # only for annotations: health and HA import this package
    from .ha.config import HaConfig
    from .hasettings import HaSettings
    from .health.spec import ServiceHealth

__all__ = [
    "Config", "RouterConfig", "TimeoutConfig", "ConfigIssue", "ConfigError", "load", "loads",
    "diff", "Change", "RouterChanged", "TimeoutsChanged", "ServiceAdded", "ServiceRemoved",
    "ServiceChanged", "RealAdded", "RealRemoved", "RealEdited", "field_docs", "SCHEDULERS",
    "SCHED_FLAGS", "IO_MODES",
]

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf",
              "twos", "mh")
"""Scheduler names accepted in `scheduler =` (IPVS names, as ipvsadm -s)."""
SCHED_FLAGS = {"sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh", "mh-port": "mh"}
"""Scheduler flag → the only scheduler it is valid with (ipvsadm parse_sched_flags)."""
IO_MODES = ("auto", "read", "uring", "sqpoll")
"""Values of `[router] io` (tunio.open_io says what each does)."""
MAX_QUEUES = 64
"""The most TUN queues `[router] queues` may ask for."""
MAX_TIMEOUT_S = 86400 * 31
"""ipvsadm MAX_TIMEOUT: the largest persistence or --set timeout, 31 days."""


@dataclass(frozen=True)
class RouterConfig:
    """The balancer's own plumbing: devices, table sizes, control socket."""

    tun: str = "ulb0"
    """Name of the TUN device the balancer creates (1..15 characters)."""
    client_interface: str = "c-rtr"
    """Interface facing the clients: VIPs are answered by proxy ARP here."""
    server_interface: str = "br-rs"
    """Interface facing the real servers: replies entering here are policy-routed into the TUN."""
    table_size: int = 65536
    """Connection table capacity in entries; the table never grows beyond it."""
    ctl_socket: str = "/run/userlb.sock"
    """Path of the control socket (a unix socket path, at most 107 bytes)."""
    trace_connections: int = 0
    """Record the packet flow of the first N connections for `userlb trace`; 0 = off."""
    batch_size: int = 256
    """Frames read from the TUN and processed per data-path batch."""
    offload: bool = True
    """Open the TUN with IFF_VNET_HDR and TSO/checksum offload: TCP super-packets of up to
    64 KiB cross the TUN whole and are rewritten once (spec/perf.md A1). On by default:
    `userlb bench path` measured it 9x faster for bulk TCP, as fast for small packets."""
    io: str = "auto"
    """How the data path reads and writes the TUN: "auto" (io_uring where the kernel allows,
    else "read"), "read" (poll + one read/write system call per frame), "uring" (a
    multishot io_uring read, writes and wait in one io_uring_enter), or "sqpoll" (io_uring
    with a kernel thread doing the I/O on another core). "uring"/"sqpoll" fall back with
    a warning where the kernel refuses them."""
    queues: int = 1
    """TUN queues (IFF_MULTI_QUEUE when > 1), each read by its own data-path thread; the
    threads share one engine, so they agree on every scheduling decision."""
    metrics: str = ""
    """"address:port" where Prometheus metrics are served (GET /metrics); "" = off."""
    web: str = ""
    """"address:port" where the web view (page and JSON API, web.py) is served; "" = off."""
    web_token: str = field(default="", repr=False)
    """Bearer token that POST /api/weight must present; "" = the web view is read-only."""
    log_format: str = "plain"
    """"plain" text lines or "json" (one JSON object per line) on stderr."""


@dataclass(frozen=True)
class TimeoutConfig:
    """Connection timeouts as `ipvsadm --set tcp tcpfin udp`: 0 keeps the current value."""

    tcp: int = 900
    """TCP ESTABLISHED timeout in seconds (ipvsadm --set's first value)."""
    tcpfin: int = 120
    """TCP FIN_WAIT timeout in seconds."""
    udp: int = 300
    """UDP timeout in seconds."""


@dataclass(frozen=True)
class Config:
    """One whole configuration file, validated."""

    router: RouterConfig = field(default_factory=RouterConfig)
    """Devices, table sizes and the control socket ([router])."""
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    """Connection timeouts ([timeouts])."""
    services: tuple[VirtualService, ...] = ()
    """Virtual services in file order ([[service]]), each with its real servers."""
    health: tuple[ServiceHealth, ...] = ()
    """Health checks per service (from lvs.cf or keepalived.conf); () = none configured."""
    ha: HaConfig | HaSettings | None = None
    """Failover: this router's HaConfig from the native [ha] table (docs/config.md), or the
    pair's HaSettings from lvs.cf pulse / keepalived VRRP; None = no HA."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file; line 0 means the file as a whole."""

    path: str
    """File name as given to load() (or "<string>")."""
    line: int
    """1-based line of the offending key or table header; 0 when there is none."""
    message: str
    """What is wrong, starting with the key path, e.g. "service[0].port: ..."."""

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `issues` holds every problem found, in line order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda issue: issue.line)
        super().__init__("\n".join(str(issue) for issue in self.issues))


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


def loads(text: str, path: str = "<string>") -> Config:
    """Parse and validate TOML text; raises ConfigError listing every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(str(exc), text, path)]) from None
    from .configcheck import check  # configcheck imports this module's dataclasses
    config, issues = check(document, path, KeyLines(text).locate)
    if issues:
        raise ConfigError(issues)
    return config


def read_text(path: str | PathLike[str]) -> str:
    """The file's text (UTF-8, BOM dropped); ConfigError (line 0, or the bad byte's line)."""
    name = str(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, 0, f"cannot read: {exc.strerror}")]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(name, line, "invalid UTF-8")]) from None


def load(path: str | PathLike[str]) -> Config:
    """Read and validate a config file; raises ConfigError (also for unreadable files)."""
    return loads(read_text(path), str(path))


def _syntax_issue(message: str, text: str, path: str) -> ConfigIssue:
    match = _TOML_POSITION.search(message)
    if match:
        line, column = int(match.group(1)), match.group(2)
        return ConfigIssue(path, line, f"invalid TOML: {message[:match.start()]} (column {column})")
    match = _TOML_END.search(message)
    line = text.count("\n") + 1 if match else 0
    return ConfigIssue(path, line, f"invalid TOML: {message[:match.start()] if match else message}")


def field_docs(cls: type) -> dict[str, str]:
    """Field name → its docstring (the string under the field), for CLI help texts."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def is_netmask(value: int) -> bool:
    """True for a contiguous IPv4 netmask (ones then zeros), including 0.0.0.0."""
    inverted = ~value & 0xFFFFFFFF
    return inverted & (inverted + 1) == 0


def normal_ipv4(text: str) -> str | None:
    """The canonical dotted quad for `text`, or None if it is not an IPv4 address."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None
