"""keepalived checkers (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK) → userlb.health checks.

What it does: reads one checker block into spec.py checks, timed by
health.presets.keepalived_knobs: interval = delay_loop, fall = retry + 1,
rise 1, the checker kind's retry / delay_before_retry defaults (TCP 1/1 s,
HTTP 1/3 s, MISC 0/1 s), warm-up random in [0, delay_loop] unless `warmup` is
given, start UP unless `alpha`. The timing keywords are inherited as keepalived
copies them down: virtual_server → real_server → checker (`Timing`). Each
HTTP_GET/SSL_GET `url` block becomes one HttpCheck (all must pass, as all urls
must in keepalived); `http_protocol` 1.0/1.0C → "1.0", default 1.0 as
keepalived; MISC_CHECK `misc_path` is split like a shell word list.

What it does not do: DNS_CHECK, SMTP_CHECK, UDP_CHECK, PING_CHECK, FILE_CHECK,
BFD_CHECK (keepalivedlvs warns and skips them), HTTP regex matching, bind*
options, `fast_recovery`, `user` (warned). Mirrors keepalived 2.2.7
check_tcp.c, check_http.c, check_misc.c, check_api.c (spec §2.3–2.4).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

from .conftext import Issues, unicast
from .health.presets import keepalived_knobs
from .health.spec import (Check, ExternalCheck, HttpCheck, TcpCheck, parse_status_codes)
from .keepalivedlex import Bad, Handler, Node, dispatch, store

CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK")
"""Checkers userlb runs."""
OTHER_CHECKERS = ("DNS_CHECK", "SMTP_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK",
                  "BFD_CHECK")
"""keepalived checkers userlb does not run (warned, skipped)."""
DEFAULT_DELAY_LOOP_S = 60.0
"""keepalived's delay_loop default."""
DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""keepalived's connect_timeout default."""
_HTTP_VERSIONS = {"1.0": "1.0", "1.0c": "1.0", "1.1": "1.1"}
_NET_UNSUPPORTED = ("bindto", "bind_port", "bind_if", "fwmark")
_QUIET = ("log_all_failures",)


@dataclass(frozen=True)
class Timing:
    """Checker settings a virtual_server or real_server passes down; None = not given here."""

    delay_loop_s: float | None = None
    connect_timeout_s: float | None = None
    retry: int | None = None
    delay_before_retry_s: float | None = None
    warmup_s: float | None = None
    alpha: bool | None = None
    virtualhost: str | None = None

    def under(self, parent: "Timing") -> "Timing":
        """These settings, falling back to `parent` where not given."""
        return Timing(**{f.name: (getattr(self, f.name) if getattr(self, f.name) is not None
                                  else getattr(parent, f.name)) for f in fields(self)})


def timing_handlers(box: dict[str, Any]) -> dict[str, Handler]:
    """Handlers that store the inheritable keywords into `box` (Timing field → value)."""
    put = partial(store, box)
    return {
        "delay_loop": put("delay_loop_s", lambda n: n.timer(low=0.000001)),
        "connect_timeout": put("connect_timeout_s", lambda n: n.timer(low=0.000001)),
        "retry": put("retry", lambda n: n.integer(0, 2**31 - 1)),
        "nb_get_retry": put("retry", lambda n: n.integer(0, 2**31 - 1)),
        "delay_before_retry": put("delay_before_retry_s", lambda n: n.timer(low=0.000001)),
        "warmup": put("warmup_s", lambda n: n.timer()),
        "alpha": put("alpha", Node.flag),
        "virtualhost": put("virtualhost", Node.arg),
    }


def read_checker(node: Node, inherited: Timing, issues: Issues) -> tuple[Check, ...]:
    """The checks of one checker block (several for an HTTP_GET with several urls)."""
    reader = {"TCP_CHECK": _tcp, "HTTP_GET": _http, "SSL_GET": _http, "MISC_CHECK": _misc}
    try:
        return reader[node.keyword](node, inherited, issues)
    except Bad as exc:
        issues.error(node.path, node.line, f"{node.keyword}: {exc}")
    except ValueError as exc:          # a spec.py dataclass refused the combination
        issues.error(node.path, node.line, f"{node.keyword}: {exc}")
    return ()


def _knobs(cls: type, kind: str, timing: Timing) -> dict[str, Any]:
    knobs = keepalived_knobs(
        cls, kind=kind, retry=timing.retry,
        delay_loop_s=timing.delay_loop_s or DEFAULT_DELAY_LOOP_S,
        connect_timeout_s=timing.connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S)
    for name in ("delay_before_retry_s", "warmup_s", "alpha"):
        if getattr(timing, name) is not None:
            knobs[name] = getattr(timing, name)
    return knobs


@dataclass
class _Net:
    """Where a network checker connects (connect_ip, connect_port)."""

    values: dict[str, Any] = field(default_factory=dict)

    def handlers(self) -> dict[str, Handler]:
        return {"connect_ip": store(self.values, "connect_ip", _address),
                "connect_port": store(self.values, "connect_port", lambda n: n.integer(1, 65535))}


def _address(node: Node) -> str:
    try:
        return unicast(node.arg())
    except ValueError as exc:
        raise Bad(str(exc)) from None


def _own(node: Node, inherited: Timing, extra: dict[str, Handler], issues: Issues,
         unsupported: tuple[str, ...] = ()) -> Timing:
    box: dict[str, Any] = {}
    dispatch(node.children(), {**timing_handlers(box), **extra}, node.keyword, issues,
             unsupported=unsupported, quiet=_QUIET)
    return Timing(**box).under(inherited)


def _tcp(node: Node, inherited: Timing, issues: Issues) -> tuple[Check, ...]:
    net = _Net()
    timing = _own(node, inherited, net.handlers(), issues, _NET_UNSUPPORTED)
    return (TcpCheck(**_knobs(TcpCheck, "tcp", timing), **net.values),)


def _http(node: Node, inherited: Timing, issues: Issues) -> tuple[Check, ...]:
    net, urls, options = _Net(), [], {"http_version": "1.0"}
    extra = {**net.handlers(),
             "url": lambda n: urls.append(_url(n, issues)),
             "http_protocol": store(options, "http_version", _http_version)}
    if node.keyword == "SSL_GET":
        extra["enable_sni"] = store(options, "tls_sni", Node.flag)
    timing = _own(node, inherited, extra, issues,
                  _NET_UNSUPPORTED + ("fast_recovery", "enable_sni"))
    if not urls:
        issues.warn(node.path, node.line, f"{node.keyword}: no url; checker ignored "
                                          "(as keepalived)")
        return ()
    base = HttpCheck(tls=node.keyword == "SSL_GET", virtual_host=timing.virtualhost,
                     **_knobs(HttpCheck, "http", timing), **net.values, **options)
    return tuple(replace(base, **{k: v for k, v in url.items() if v is not None})
                 for url in urls if url is not None)


def _http_version(node: Node) -> str:
    version = _HTTP_VERSIONS.get(node.arg().lower())
    if version is None:
        raise Bad(f"expected 1.0, 1.0C or 1.1, got '{node.arg()}'")
    return version


def _url(node: Node, issues: Issues) -> dict[str, Any] | None:
    url: dict[str, Any] = {"path": None, "digest_md5": None, "status_codes": None,
                           "virtual_host": None}
    handlers = {"path": store(url, "path", Node.arg),
                "digest": store(url, "digest_md5", lambda n: n.arg().lower()),
                "status_code": store(url, "status_codes", _status_codes),
                "virtualhost": store(url, "virtual_host", Node.arg)}
    errors = len(issues.errors)
    dispatch(node.children(), handlers, "url", issues,
             unsupported=("regex", "regex_no_match", "regex_options", "regex_min_offset",
                          "regex_max_offset", "regex_stack"))
    if url["path"] is None:
        issues.error(node.path, node.line, "url: missing 'path'")
    return url if len(issues.errors) == errors else None


def _status_codes(node: Node) -> tuple[int, ...]:
    try:
        return parse_status_codes([node.arg(), *node.args[1:]])
    except ValueError:
        raise Bad(f"expected codes 100..599 or ranges like 200-299, got "
                  f"'{' '.join(node.args)}'") from None


def _misc(node: Node, inherited: Timing, issues: Issues) -> tuple[Check, ...]:
    misc: dict[str, Any] = {}
    extra = {"misc_path": store(misc, "argv", lambda n: shlex.split(n.arg())),
             "misc_timeout": store(misc, "timeout_s", lambda n: n.timer(low=0.000001)),
             "misc_dynamic": store(misc, "dynamic", Node.flag)}
    timing = _own(node, inherited, extra, issues, ("user",))
    argv = misc.pop("argv", None)
    if not argv:
        raise Bad("missing misc_path")
    return (ExternalCheck(program=argv[0], args=tuple(argv[1:]),
                          **{**_knobs(ExternalCheck, "external", timing), **misc}),)
