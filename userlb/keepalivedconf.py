"""keepalived.conf → `Config` with health checks and VRRP HA settings.

What it does: `loads(text, path)` / `load(path)` return `(Config, warnings)` or
raise ConfigError listing every `path:line: message` (a problem inside an
included file names that file). keepalivedlex builds the tree (includes,
comments, blocks); the top-level blocks go to: `global_defs` and
`vrrp_instance`/`vrrp_sync_group` → keepalivedvrrp (HaSettings,
lvs_timeouts); `virtual_server` → keepalivedlvs (VirtualService +
ServiceHealth, checkers via keepalivedcheck); `virtual_server_group` is
parsed, and refused where a virtual_server uses it. The router's client
interface is the one holding a virtual_server's VIP among the VRRP
addresses; its server interface the one holding another VRRP address (the
real servers' gateway); RouterConfig's defaults otherwise.

What it does not do: run anything, or accept what userlb cannot honour: lb_kind
DR/TUN, fwmark services, IPv6, SCTP are errors. Keywords keepalived knows
but userlb ignores, and keywords nobody knows, are warnings, as keepalived
warns about unknown keywords and carries on.
"""

from __future__ import annotations

import glob
import ipaddress
from os import PathLike
from typing import Callable

from .config import Config, ConfigIssue
from .conftext import Issues, read_text, router_for, service_key_text
from .health.spec import ServiceHealth
from .keepalivedlex import Bad, Node, dispatch, parse_text, read_file
from .keepalivedlvs import read_virtual_server
from .keepalivedvrrp import Vrrp
from .services import VirtualService

__all__ = ["loads", "load"]

_TOP_UNSUPPORTED = ("vrrp_script", "vrrp_track_process", "vrrp_track_file", "track_file",
                    "static_ipaddress", "static_routes", "static_rules", "SSL", "bfd_instance",
                    "garp_group", "linkbeat_interfaces", "vrrp_gna_interval")


def loads(text: str, path: str = "<string>", *, read: Callable[[str], str] = read_file,
          expand: Callable[[str], list[str]] = glob.glob
          ) -> tuple[Config, tuple[ConfigIssue, ...]]:
    """Parse keepalived.conf text read from `path` (includes are relative to its directory)."""
    issues = Issues()
    nodes = parse_text(text, path, issues, read=read, expand=expand)
    config = _Builder(issues).build(nodes)
    issues.fail()
    return config, issues.sorted_warnings()


def load(path: str | PathLike[str]) -> tuple[Config, tuple[ConfigIssue, ...]]:
    """Read and parse a keepalived.conf file and the files it includes."""
    return loads(read_text(path), str(path))


class _Builder:
    def __init__(self, issues: Issues) -> None:
        self.issues = issues
        self.vrrp = Vrrp(issues)
        self.services: list[VirtualService] = []
        self.health: list[ServiceHealth] = []
        self.first: dict[tuple, Node] = {}

    def build(self, nodes: tuple[Node, ...]) -> Config:
        handlers = {"global_defs": self.vrrp.global_defs, "vrrp_instance": self._instance,
                    "vrrp_sync_group": self._sync_group, "virtual_server": self.virtual_server,
                    "virtual_server_group": self._group}
        dispatch(nodes, handlers, "the top level", self.issues, unsupported=_TOP_UNSUPPORTED)
        ha = self.vrrp.settings()
        router = router_for(ha.floating if ha else (), {s.vip for s in self.services})
        return Config(router, self.vrrp.timeout_config(), tuple(self.services),
                      tuple(self.health), ha)

    def _instance(self, node: Node) -> None:
        _named(node)
        self.vrrp.instance(node)

    def _sync_group(self, node: Node) -> None:
        _named(node)
        self.vrrp.sync_group(node)

    def _group(self, node: Node) -> None:
        _named(node)
        for entry in node.children():
            try:
                _group_entry(entry)
            except Bad as exc:
                self.issues.error(entry.path, entry.line, f"virtual_server_group entry "
                                                          f"'{entry.text()}': {exc}")
        self.issues.warn(node.path, node.line, f"virtual_server_group {node.arg()}: not "
                                               "supported by userlb; ignored")

    def virtual_server(self, node: Node) -> None:
        built = read_virtual_server(node, self.issues)
        if built is None:
            return
        service, health = built
        first = self.first.get(service.key)
        if first is not None:
            where = first.line if first.path == node.path else f"{first.path}:{first.line}"
            self.issues.error(node.path, node.line, f"virtual_server: duplicate service "
                                                    f"{service_key_text(service)} (first "
                                                    f"defined at line {where})")
            return
        self.first[service.key] = node
        self.services.append(service)
        self.health.append(health)


def _named(node: Node) -> None:
    if len(node.args) != 1:
        raise Bad("expected one name")


def _group_entry(entry: Node) -> None:
    """One virtual_server_group line: IP[-LAST] [PORT] | IP/LEN [PORT] | fwmark N."""
    words = entry.words
    if words[0] == "fwmark":
        if len(words) < 2 or not words[1].isdigit():
            raise Bad("fwmark needs a number")
        return
    try:
        ipaddress.IPv4Address(words[0].split("-")[0].split("/")[0])
    except ValueError as exc:
        raise Bad(str(exc)) from None
    if len(words) > 1 and not (words[1].isdigit() and int(words[1]) <= 65535):
        raise Bad(f"bad port '{words[1]}'")
