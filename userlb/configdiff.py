"""What a reload changes: `diff(old, new)` → a list of frozen change records.

Services are matched by (protocol, vip, port) and real servers by (address, port),
as ipvsadm identifies them; everything else about them is an edit. The order of
the list is the order to apply it in: router settings, timeouts, removed
services, added services, then per kept service (new file order) its own
settings, removed, added and edited real servers. An added service carries its
real servers inside it (no separate RealAdded records). Reordering real servers
in the file is not a change: the kernel keeps a kept server's list position too.

Does not apply anything; `control` does, mirroring ipvsadm -E/-e/-a/-d and --set.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Union

from .services import RealServer, VirtualService

if TYPE_CHECKING:
    from .config import Config, TimeoutConfig

LIVE_ROUTER_FIELDS = frozenset({"trace_connections", "batch_size"})
"""Router settings a running balancer can take over; the others need a restart."""


@dataclass(frozen=True)
class RouterChanged:
    """One [router] setting differs."""

    name: str
    """Field of RouterConfig, e.g. "table_size"."""
    old: object
    """Value in the running config."""
    new: object
    """Value in the new config."""

    @property
    def restart_required(self) -> bool:
        """True when only a restart can apply it (devices, socket, table size)."""
        return self.name not in LIVE_ROUTER_FIELDS


@dataclass(frozen=True)
class TimeoutsChanged:
    """[timeouts] differ; apply as ipvsadm --set (0 keeps the current value)."""

    old: "TimeoutConfig"
    """Running timeouts."""
    new: "TimeoutConfig"
    """New timeouts."""


@dataclass(frozen=True)
class ServiceAdded:
    """A service only in the new config (with all its real servers)."""

    service: VirtualService
    """The new service."""


@dataclass(frozen=True)
class ServiceRemoved:
    """A service only in the old config (its real servers go with it)."""

    service: VirtualService
    """The service as it was."""


@dataclass(frozen=True)
class ServiceChanged:
    """A kept service whose own settings differ (as ipvsadm -E)."""

    old: VirtualService
    """The service as it was."""
    new: VirtualService
    """The service as it will be."""
    names: tuple[str, ...]
    """Fields that differ: scheduler, sched_flags, persistent_s, netmask, match."""


@dataclass(frozen=True)
class RealAdded:
    """A real server added to a kept service (as ipvsadm -a)."""

    service: VirtualService
    """The service, as in the new config."""
    real: RealServer
    """The new real server."""


@dataclass(frozen=True)
class RealRemoved:
    """A real server removed from a kept service (as ipvsadm -d)."""

    service: VirtualService
    """The service, as in the new config."""
    real: RealServer
    """The real server as it was."""


@dataclass(frozen=True)
class RealEdited:
    """A kept real server whose weight or thresholds differ (as ipvsadm -e)."""

    service: VirtualService
    """The service, as in the new config."""
    old: RealServer
    """The real server as it was."""
    new: RealServer
    """The real server as it will be."""
    names: tuple[str, ...]
    """Fields that differ: weight, u_threshold, l_threshold."""


Change = Union[RouterChanged, TimeoutsChanged, ServiceAdded, ServiceRemoved, ServiceChanged,
               RealAdded, RealRemoved, RealEdited]

_SERVICE_SETTINGS = ("scheduler", "sched_flags", "persistent_s", "netmask", "match")
_REAL_SETTINGS = ("weight", "u_threshold", "l_threshold")


def diff(old: "Config", new: "Config") -> list[Change]:
    """Every change from `old` to `new`, in the order to apply them."""
    changes: list[Change] = [
        RouterChanged(f.name, getattr(old.router, f.name), getattr(new.router, f.name))
        for f in fields(old.router)
        if getattr(old.router, f.name) != getattr(new.router, f.name)]
    if old.timeouts != new.timeouts:
        changes.append(TimeoutsChanged(old.timeouts, new.timeouts))
    old_services = {_service_key(s): s for s in old.services}
    new_services = {_service_key(s): s for s in new.services}
    changes += [ServiceRemoved(s) for k, s in old_services.items() if k not in new_services]
    changes += [ServiceAdded(s) for k, s in new_services.items() if k not in old_services]
    for key, service in new_services.items():
        if key in old_services:
            changes += _service_changes(old_services[key], service)
    return changes


def _service_key(service: VirtualService) -> tuple[int, int, int]:
    return service.key           # (protocol, vip, port), or (0, mark, 0) for a fwmark service


def _differing(old: object, new: object, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if getattr(old, name) != getattr(new, name))


def _service_changes(old: VirtualService, new: VirtualService) -> list[Change]:
    changes: list[Change] = []
    names = _differing(old, new, _SERVICE_SETTINGS)
    if names:
        changes.append(ServiceChanged(old, new, names))
    old_reals = {(r.address, r.port): r for r in old.reals}
    new_reals = {(r.address, r.port): r for r in new.reals}
    changes += [RealRemoved(new, r) for k, r in old_reals.items() if k not in new_reals]
    changes += [RealAdded(new, r) for k, r in new_reals.items() if k not in old_reals]
    for key, real in new_reals.items():
        if key in old_reals:
            names = _differing(old_reals[key], real, _REAL_SETTINGS)
            if names:
                changes.append(RealEdited(new, old_reals[key], real, names))
    return changes
