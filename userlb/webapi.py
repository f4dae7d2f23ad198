"""The web view's HTTP rules, sans-I/O: routing, the bearer-token check, weight requests.

What it does: `route(method, target)` names the handler for a request line (or gives
404/405); `authorize(token, authorization)` applies the one write rule: without a
configured token the view is read-only (403 for every change), with one a request must
carry `Authorization: Bearer <token>` (401 otherwise; compared in constant time);
`parse_weight(body)` validates a POST /api/weight body; `response(...)` builds status,
headers and body with the security headers every answer carries.

What it does not do: sockets, HTTP framing (web.py drives h11), or touch the engine.
Weights are checked as ipvsadm checks them (0..65535; 0 quiesces: no new connections,
established ones drain).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

MAX_BODY_BYTES = 4096
MAX_WEIGHT = 65535
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
API = {"/api/state": "GET", "/api/weight": "POST"}
SECURITY_HEADERS = [
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
]


@dataclass(frozen=True)
class Route:
    """Where a request goes: a handler name ("static", "state", "weight") or an error."""

    handler: str | None
    status: int = 200
    detail: str = ""          # the static file name, or the Allow header for 405


@dataclass(frozen=True)
class WeightEdit:
    """POST /api/weight: set `server`'s weight in `service` (names as /api/state gives)."""

    service: str              # "TCP 198.18.1.100:80" or "FWM 7"
    address: str
    port: int
    weight: int


def route(method: str, target: str) -> Route:
    path = target.split("?", 1)[0]
    if path in STATIC:
        return Route("static", 200, STATIC[path][0]) if method == "GET" else Route(
            None, 405, "GET")
    if path in API:
        if method != API[path]:
            return Route(None, 405, API[path])
        return Route(path.rsplit("/", 1)[1])
    return Route(None, 404)


def authorize(token: str, authorization: str | None) -> tuple[int, str] | None:
    """None when the change may go ahead, else (status, reason)."""
    if not token:
        return 403, "read-only: no web_token is configured"
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        return 401, "a valid 'Authorization: Bearer <token>' header is required"
    return None


def parse_weight(body: bytes) -> WeightEdit:
    """{"service": "TCP 198.18.1.100:80", "server": "198.18.2.11:8080", "weight": 0}."""
    try:
        data = json.loads(body)
        service, server, weight = data["service"], data["server"], data["weight"]
    except (ValueError, TypeError, KeyError):
        raise ValueError('body must be JSON {"service": ..., "server": "addr:port", '
                         '"weight": N}') from None
    if not isinstance(service, str) or not isinstance(server, str):
        raise ValueError("service and server must be strings")
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be an integer in 0..{MAX_WEIGHT}")
    address, _, port = server.rpartition(":")
    if not address or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"server must be address:port, got {server!r}")
    return WeightEdit(service, address, int(port), weight)


def response(status: int, body: bytes, content_type: str,
             extra: list[tuple[str, str]] | None = None) -> tuple[int, list, bytes]:
    headers = [("content-type", content_type), ("content-length", str(len(body))),
               *SECURITY_HEADERS, *(extra or [])]
    return status, headers, body


def json_response(status: int, obj, extra: list[tuple[str, str]] | None = None):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return response(status, body, "application/json", extra)


def error(status: int, message: str, allow: str = ""):
    extra = [("allow", allow)] if status == 405 and allow else []
    if status == 401:
        extra.append(("www-authenticate", 'Bearer realm="userlb"'))
    return json_response(status, {"error": message}, extra)
