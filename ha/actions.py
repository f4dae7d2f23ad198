"""What the HA state machine asks the edge to do: frozen dataclasses, nothing else.

ha/fsm.py returns lists of these; ha/runner.py (EDGE) performs them in order.
Order matters and is part of the contract: on becoming master the list is
StateChanged, SendAdvert, ClaimVips, SendGarp (keepalived sends the advert
first so that an old master drops the VIPs before the new one GARPs); on
yielding it is StateChanged, SendAdvert (own priority: the winner answers with a
GARP burst), ReleaseVips; and the last element of a list is ArmTimer/CancelTimer
whenever the next deadline moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Union

from userlb.ha.heartbeat import Role


@dataclass(frozen=True)
class StateChanged:
    """The node moved from `old` to `new` because of `event` (notify scripts, sync daemon role)."""

    old: Role
    new: Role
    event: str


@dataclass(frozen=True)
class SendAdvert:
    """Send one advertisement now: a VRRPv3 advert or a heartbeat, per the configured protocol.

    `priority` 0 announces that this node releases the VIPs (shutdown or fault);
    `role` is what a heartbeat carries (VRRP adverts are only ever sent by a master
    or a resigning master, so VRRP ignores it). fsm.make_advert() builds the VRRP form.
    """

    priority: int
    role: Role


@dataclass(frozen=True)
class ClaimVips:
    """Add the VIPs to the interface and start answering for them."""

    vips: tuple[IPv4Address, ...]


@dataclass(frozen=True)
class ReleaseVips:
    """Remove the VIPs from the interface."""

    vips: tuple[IPv4Address, ...]


@dataclass(frozen=True)
class SendGarp:
    """Send `count` gratuitous ARPs per VIP, `interval_s` apart (0 = back to back), starting now.

    Later bursts (keepalived's garp_master_delay, refresh) come as further SendGarp
    actions from fsm.on_timer, so releasing the VIPs cancels them without edge logic.
    """

    vips: tuple[IPv4Address, ...]
    count: int
    interval_s: float


@dataclass(frozen=True)
class ArmTimer:
    """Call fsm.on_timer(now) at time `at` (same clock as the `now` passed in); replaces any earlier arm."""

    at: float


@dataclass(frozen=True)
class CancelTimer:
    """No deadline is pending any more."""


Action = Union[StateChanged, SendAdvert, ClaimVips, ReleaseVips, SendGarp, ArmTimer, CancelTimer]
