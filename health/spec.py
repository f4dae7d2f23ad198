"""Health-check configuration: one frozen dataclass per check type, plus the service-level knobs.

What it does: declares TcpCheck, HttpCheck (HTTP and HTTPS GET), SendExpectCheck and ExternalCheck,
each carrying its own timeouts and the policy knobs (interval_s, rise, fall, delay_before_retry_s,
warmup_s, alpha, initial_rise); ServiceHealth ties checks to a VirtualService's real servers and adds
the per-service action (quiesce or remove), quorum/hysteresis and sorry server. ProbeResult is the
one value a probe hands to the policy. It does no I/O and decides nothing (policy.py decides).

What it mirrors: keepalived's checker keywords (connect_ip/connect_port/connect_timeout, retry →
fall = retry + 1, delay_before_retry, warmup, alpha, HTTP_GET/SSL_GET url/status_code/digest,
MISC_CHECK misc_path/misc_timeout/misc_dynamic) and Piranha's nanny (send/expect, send_program with
%h/%p). Presets that reproduce either program's timing live in presets.py. Times are seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from userlb.services import RealServer, VirtualService, ip_to_int

ServiceKey = tuple[int, int, int]
"""VirtualService.key: (IP protocol number, VIP as host-order u32, virtual port)."""
RealKey = tuple[int, int]
"""(real address as host-order u32, configured real port): the arguments of DestTable.find."""
CheckId = tuple[ServiceKey, RealKey, int]
"""(service key, real key, index of the check among that real server's checks)."""

_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe, as probes.py returns it and policy.observe consumes it."""

    ok: bool
    """True iff the check passed."""
    rtt_s: float = 0.0
    """Time from the start of the probe to its verdict."""
    detail: str = ""
    """Human-readable reason ("connect refused", "status 500", "exit 1", ...)."""
    weight: int | None = None
    """A dynamic weight reported by the check (MISC_CHECK misc_dynamic: exit − 2); None = no opinion."""


@dataclass(frozen=True, kw_only=True)
class CheckBase:
    """Policy knobs common to every check type (the pure policy reads only these)."""

    type: ClassVar[str] = ""
    interval_s: float = 10.0
    """Gap between the end of one probe and the start of the next (keepalived delay_loop; nanny timeout)."""
    rise: int = 1
    """Consecutive passes that bring a DOWN check back UP (keepalived: 1; nanny: reentry // timeout)."""
    fall: int = 2
    """Consecutive failures that take an UP check DOWN (keepalived: retry + 1; nanny: 1)."""
    delay_before_retry_s: float = 1.0
    """Gap used instead of interval_s while an UP check is failing but fewer than `fall` times."""
    warmup_s: float | None = None
    """The first probe starts at a random offset in [0, warmup_s]; None = [0, interval_s]; 0 = at once."""
    alpha: bool = False
    """Start DOWN and wait for passes (keepalived alpha); False = start UP (keepalived's default)."""
    initial_rise: int | None = None
    """With alpha: passes needed the very first time, if no failure came first; None = rise.
    nanny uses 1: its pass counter starts at reentry/timeout, so a first pass brings a server in."""

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1 or (self.initial_rise is not None and self.initial_rise < 1):
            raise ValueError("rise, fall and initial_rise must be >= 1")
        if self.interval_s <= 0 or self.delay_before_retry_s <= 0:
            raise ValueError("interval_s and delay_before_retry_s must be > 0")
        if self.warmup_s is not None and self.warmup_s < 0:
            raise ValueError("warmup_s must be >= 0")

    @property
    def label(self) -> str:
        """Short description for event reasons and logs."""
        return self.type


@dataclass(frozen=True, kw_only=True)
class NetCheckBase(CheckBase):
    """Where a network check connects and how long the connect may take."""

    connect_ip: str | None = None
    """Address to probe; None = the real server's address (keepalived connect_ip)."""
    connect_port: int | None = None
    """Port to probe; None = the real server's port, or the virtual port if that is 0."""
    connect_timeout_s: float = 5.0
    """Limit on the TCP connect (and the TLS handshake for HTTPS)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be > 0")


@dataclass(frozen=True, kw_only=True)
class TcpCheck(NetCheckBase):
    """Passes when a TCP connect completes within connect_timeout_s (keepalived TCP_CHECK)."""

    type: ClassVar[str] = "tcp"


@dataclass(frozen=True, kw_only=True)
class HttpCheck(NetCheckBase):
    """GET one URL over HTTP or HTTPS (keepalived HTTP_GET / SSL_GET with one `url` block).

    Passes when the status is in status_codes and, if digest_md5 is set, the MD5 of the whole body
    equals it. io_timeout_s bounds the whole exchange after connect, not each read (keepalived #1822).
    """

    type: ClassVar[str] = "http"
    tls: bool = False
    """True for HTTPS (type "https" in TOML; keepalived SSL_GET)."""
    path: str = "/"
    """Request target, e.g. "/healthz"."""
    virtual_host: str | None = None
    """Host header; None = the probed address (with ":port" unless it is 80/443)."""
    status_codes: tuple[int, ...] = tuple(range(200, 300))
    """Accepted status codes (keepalived status_code, default 200-299)."""
    digest_md5: str | None = None
    """Lower-case hex MD5 of the expected body (keepalived digest, genhash); None = body not checked."""
    http_version: Literal["1.0", "1.1"] = "1.1"
    """Request version; both send Host and Connection: close (keepalived http_protocol 1.0C/1.1)."""
    io_timeout_s: float = 5.0
    """Limit on sending the request and reading the whole response."""
    tls_verify: bool = False
    """Verify the server certificate; off by default, as keepalived's SSL_GET."""
    tls_sni: bool = False
    """Send SNI (virtual_host, else the address); off by default (keepalived enable_sni)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.status_codes:
            raise ValueError("status_codes must not be empty")
        if self.digest_md5 is not None and not _HEX32.fullmatch(self.digest_md5):
            raise ValueError("digest_md5 must be 32 lower-case hex digits")
        if self.http_version not in ("1.0", "1.1") or not self.path.startswith("/"):
            raise ValueError("http_version must be 1.0 or 1.1 and path must start with /")

    @property
    def label(self) -> str:
        return f"{'https' if self.tls else 'http'} GET {self.path}"


@dataclass(frozen=True, kw_only=True)
class SendExpectCheck(NetCheckBase):
    """Connect, write `send`, then read until `expect` is found or io_timeout_s ends (nanny send/expect).

    Unlike nanny, a reply split across segments still matches: data accumulates until the match,
    EOF, max_reply_bytes or the deadline. Plain `expect` matches anywhere in the reply.
    """

    type: ClassVar[str] = "send_expect"
    send: str = ""
    """Text written once after connect (UTF-8); "" = write nothing."""
    expect: str = ""
    """Text (or regex) the reply must contain; "" = pass once connected and `send` is written."""
    regex: bool = False
    """Treat `expect` as a Python regular expression searched in the reply (nanny use_regex)."""
    io_timeout_s: float = 5.0
    """Limit on writing and on reading until the match, as one deadline."""
    max_reply_bytes: int = 65536
    """Stop reading (and fail) after this many bytes without a match."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.regex:
            re.compile(self.expect)

    @property
    def label(self) -> str:
        return f"send_expect {self.expect!r}"


@dataclass(frozen=True, kw_only=True)
class ExternalCheck(CheckBase):
    """Run a program; exit 0 = pass (keepalived MISC_CHECK, nanny send_program).

    "%h" and "%p" in args become the real server's address and port (nanny). With `dynamic`, exit
    codes 2..255 also pass and set the weight to code − 2 (misc_dynamic); 1 and anything else fail.
    A program that fails or times out never counts as a pass (nanny's send_program quirk, §9.5).
    """

    type: ClassVar[str] = "external"
    program: str
    """Path of the executable (run directly, no shell)."""
    args: tuple[str, ...] = ()
    """Arguments; "%h" → real address, "%p" → real port."""
    timeout_s: float = 10.0
    """Limit on the whole run; the process group is SIGKILLed when it ends (keepalived misc_timeout)."""
    dynamic: bool = False
    """Exit codes 2..255 pass with weight = code − 2 (keepalived misc_dynamic)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.program or self.timeout_s <= 0:
            raise ValueError("program must be set and timeout_s must be > 0")

    @property
    def label(self) -> str:
        return f"external {self.program}"


Check = TcpCheck | HttpCheck | SendExpectCheck | ExternalCheck
CHECK_TYPES: dict[str, type] = {"tcp": TcpCheck, "http": HttpCheck, "https": HttpCheck,
                                "send_expect": SendExpectCheck, "external": ExternalCheck}
"""TOML `type` → dataclass ("https" is HttpCheck with tls = True)."""


@dataclass(frozen=True, kw_only=True)
class ServiceHealth:
    """The health configuration of one virtual service."""

    service: VirtualService
    """The service; its `reals` are the servers checked."""
    checks: tuple[tuple[Check, ...], ...] = ()
    """Checks per real server, parallel to service.reals; missing or empty = no check, always up."""
    on_failure: Literal["remove", "quiesce"] = "remove"
    """"quiesce" sets weight 0 (new flows stop, existing ones drain; keepalived inhibit_on_failure,
    Piranha quiesce_server); "remove" deletes the destination."""
    quorum: int = 1
    """Minimum total weight of live real servers (keepalived quorum)."""
    hysteresis: int = 0
    """Quorum is gained at quorum + hysteresis and lost below quorum − hysteresis (or at 0)."""
    sorry_server: RealServer | None = None
    """Put in (with its own weight) while quorum is lost; the live servers are then taken out."""

    def __post_init__(self) -> None:
        if len(self.checks) > len(self.service.reals):
            raise ValueError("more check lists than real servers")
        if self.on_failure not in ("remove", "quiesce") or self.quorum < 0 or self.hysteresis < 0:
            raise ValueError("on_failure must be remove|quiesce; quorum, hysteresis >= 0")
        if self.sorry_server is not None and real_key(self.sorry_server) in map(real_key, self.service.reals):
            raise ValueError("the sorry server must not be one of the real servers")

    @property
    def key(self) -> ServiceKey:
        return self.service.key

    def checks_of(self, index: int) -> tuple[Check, ...]:
        """The checks of service.reals[index]."""
        return self.checks[index] if index < len(self.checks) else ()


def real_key(real: RealServer) -> RealKey:
    """The key events use for a real server (what DestTable.find takes)."""
    return (ip_to_int(real.address), real.port)


def probe_target(check: Check, real: RealServer, service: VirtualService) -> tuple[str, int]:
    """(address, port) a network check connects to; port 0 on the real means the virtual port."""
    host = getattr(check, "connect_ip", None) or real.address
    port = getattr(check, "connect_port", None) or real.port or service.port
    return host, port


def parse_status_codes(items: list[int | str] | tuple[int | str, ...]) -> tuple[int, ...]:
    """[200, "301-303"] → (200, 301, 302, 303), as keepalived's status_code list."""
    codes: list[int] = []
    for item in items:
        if isinstance(item, int):
            codes.append(item)
            continue
        low, _, high = str(item).partition("-")
        codes.extend(range(int(low), int(high or low) + 1))
    if not codes or not all(100 <= c <= 599 for c in codes):
        raise ValueError(f"bad status codes {items!r}")
    return tuple(sorted(set(codes)))
