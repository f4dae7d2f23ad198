"""HA settings for one router: a frozen dataclass with a docstring on each field.

What it does: holds and validates what ha/fsm.py needs; defaults are keepalived's
(VRRP, GARP) and pulse's (heartbeat keepalive/deadtime), and are the single
source for CLI and config-file defaults (style rule 12).

What it does not do: parse files (userlb/config.py does) or touch the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface

from userlb.ha.vrrp import MAX_ADVERT_INT_CS


class Protocol(str, Enum):
    """Which advertisement protocol the pair speaks."""

    VRRP = "vrrp"             # VRRPv3, IP protocol 112 to 224.0.0.18 (interoperates with keepalived)
    HEARTBEAT = "heartbeat"   # native authenticated heartbeat, UDP 539 (pulse's port)


@dataclass(frozen=True)
class HaConfig:
    """One router's HA configuration (str addresses are accepted and converted)."""

    primary: IPv4Address
    """This router's primary address: VRRP source, heartbeat node id, split-brain tie-break."""
    vips: tuple[IPv4Address, ...]
    """The virtual addresses moved on takeover (and the NAT router address, if any)."""
    protocol: Protocol = Protocol.VRRP
    """VRRP or HEARTBEAT."""
    priority: int = 100
    """1..255; 255 = address owner (master at once, always preempts); keepalived default 100."""
    vrid: int = 1
    """VRRP virtual router id, 1..255 (keepalived's virtual_router_id)."""
    advert_int_cs: int = 100
    """VRRP Advertisement_Interval in centiseconds, 1..4095 (keepalived advert_int 1 s)."""
    down_timer_adverts: int = 3
    """Adverts missed before takeover, the 3 in Master_Down_Interval (keepalived down_timer_adverts)."""
    keepalive_s: float = 2.0
    """Heartbeat: seconds between heartbeats (pulse keepalive, default 2)."""
    deadtime_s: float = 5.0
    """Heartbeat: silence after which the partner is dead and a backup takes over (pulse deadtime 5)."""
    failback: bool = True
    """True: a returning higher-ranked node takes the VIPs back (VRRP preempt). False: Piranha's
    no-failback (keepalived nopreempt): a backup never displaces a live master."""
    garp_repeat: int = 5
    """GARPs per VIP in each burst on becoming master (keepalived vrrp_garp_master_repeat)."""
    garp_delay_s: float = 5.0
    """Delay of the second burst; 0 = no second burst (keepalived vrrp_garp_master_delay)."""
    garp_interval_s: float = 0.0
    """Spacing of the GARPs within a burst (keepalived vrrp_garp_interval 0; pulse used 1 s)."""
    garp_refresh_s: float = 0.0
    """Periodic GARP while master, 0 = off (keepalived vrrp_garp_master_refresh)."""
    garp_refresh_repeat: int = 1
    """GARPs per VIP in each refresh (keepalived vrrp_garp_master_refresh_repeat)."""
    garp_lower_prio: bool = True
    """A master that hears a lower-ranked master answers with an advert and a GARP burst."""

    # ---- where the edge (ha/net.py, ha/runner.py) speaks; the state machine ignores these ----
    interface: str = ""
    """Public (client-side) interface for adverts/heartbeats and the VIPs' GARPs; "" = not set."""
    private_interface: str = ""
    """Private (server-side) interface: second heartbeat/advert path (when private_address is
    set), the gateway's GARPs, default sync interface; "" = not set."""
    private_address: IPv4Address | None = None
    """This router's own address on private_interface; None = adverts on `interface` only."""
    peer: IPv4Address | None = None
    """The partner's public address (heartbeat: where to send, whom to accept; its node id)."""
    peer_private: IPv4Address | None = None
    """The partner's address on the private segment (heartbeat's second path)."""
    heartbeat_port: int = 539
    """UDP port of the heartbeat on both ends (pulse's heartbeat_port)."""
    key: bytes = field(default=b"", repr=False)
    """Heartbeat HMAC-SHA256 key, >= 16 bytes (heartbeat.MIN_KEY_BYTES); unused by VRRP."""
    nat_router: IPv4Interface | None = None
    """Floating gateway of the real servers with its prefix (lvs.cf nat_router), claimed
    on private_interface with the VIPs; its address is also in `vips`."""
    sync: bool = True
    """Stream connection-table changes to the backup (IPVS sync v1) so connections survive."""
    sync_interface: str = ""
    """Interface of the sync multicast; "" = private_interface."""
    sync_group: IPv4Address = IPv4Address("224.0.0.81")
    """Multicast group of the sync messages (the kernel's default)."""
    sync_port: int = 8848
    """UDP port of the sync messages (the kernel's default)."""
    syncid: int = 0
    """IPVS sync id 0..255 put in and required of messages; 0 accepts any (kernel semantics)."""
    sync_interval_s: float = 0.25
    """How often a master sends the connections changed since the last send."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "primary", IPv4Address(self.primary))
        object.__setattr__(self, "vips", tuple(IPv4Address(v) for v in self.vips))
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        for name in ("private_address", "peer", "peer_private", "sync_group"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, IPv4Address(value))
        if self.nat_router is not None:
            object.__setattr__(self, "nat_router", IPv4Interface(self.nat_router))
        object.__setattr__(self, "key", bytes(self.key))
        for problem in self._problems():
            raise ValueError(problem)

    def _problems(self) -> list[str]:
        checks = [
            (not self.vips, "at least one VIP is needed"),
            (not 1 <= self.priority <= 255, f"priority {self.priority} not in 1..255 (0 is 'releasing')"),
            (not 1 <= self.vrid <= 255, f"vrid {self.vrid} not in 1..255"),
            (not 1 <= self.advert_int_cs <= MAX_ADVERT_INT_CS, "advert_int_cs not in 1..4095"),
            (not 1 <= self.down_timer_adverts <= 100, "down_timer_adverts not in 1..100"),
            (not self.keepalive_s > 0, "keepalive_s must be > 0"),
            (not self.deadtime_s > self.keepalive_s, "deadtime_s must exceed keepalive_s"),
            (self.garp_repeat < 0 or self.garp_refresh_repeat < 0, "GARP repeats must be >= 0"),
            (min(self.garp_delay_s, self.garp_interval_s, self.garp_refresh_s) < 0,
             "GARP delays must be >= 0"),
            (not 1 <= self.heartbeat_port <= 65535, "heartbeat_port not in 1..65535"),
            (not 1 <= self.sync_port <= 65535, "sync_port not in 1..65535"),
            (not 0 <= self.syncid <= 255, "syncid not in 0..255"),
            (not self.sync_interval_s > 0, "sync_interval_s must be > 0"),
            (self.nat_router is not None and self.nat_router.ip not in self.vips,
             "the nat_router address must be one of the vips"),
        ]
        return [msg for bad, msg in checks if bad]

    @property
    def node_id(self) -> int:
        """Heartbeat node id: the primary address as an integer (so the tie-break is one rule)."""
        return int(self.primary)
