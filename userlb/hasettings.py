"""HA settings as the config files state them, for both routers of a pair.

What it does: frozen dataclasses for what Piranha's lvs.cf (pulse heartbeat,
primary/backup, nat_router) and keepalived.conf (vrrp_instance,
vrrp_sync_group, GARP globals, lvs_sync_daemon) say about failover, and
`ha_config(settings, local)` that turns them into one router's
`userlb.ha.config.HaConfig`. Addresses are canonical dotted quads.

What it does not do: parse (lvscf, keepalivedvrrp do) or run anything.
It differs from ha/config.py on purpose: a config file describes the pair
(both addresses, every instance); HaConfig describes one node of it.

Mirrors: pulse (spec §1.3, §1.8) — heartbeat_port 539, keepalive 2 s,
deadtime 5 s, the primary keeps the VIPs, no failback, 5 ARPs 1 s apart;
keepalived 2.2.7 (§2.6) — priority 100, advert_int 1 s, preempt unless
nopreempt, GARP 5 + 5 after 5 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from userlb.ha.config import HaConfig, Protocol

PULSE_PRIMARY_PRIORITY = 200
"""Priority given to pulse's primary in HaConfig: higher than the backup's, so it keeps the VIPs."""
PULSE_BACKUP_PRIORITY = 100
"""Priority given to pulse's backup in HaConfig."""


@dataclass(frozen=True)
class FloatingAddress:
    """An address that lives on whichever router is active: a VIP or the NAT gateway."""

    address: str
    """IPv4 address, e.g. "198.18.1.100"."""
    prefixlen: int = 32
    """Prefix length on the interface (lvs.cf vip_nmask/nat_nmask; keepalived IP/LEN)."""
    device: str = ""
    """Interface it is added to, alias suffix removed ("rc0"); "" = not stated."""
    label: str = ""
    """Alias label as written ("rc0:1", keepalived `label`); "" = none."""


@dataclass(frozen=True)
class HeartbeatSettings:
    """Piranha pulse: two routers exchanging UDP heartbeats (lvs.cf global section)."""

    primary: str
    """Public address of the primary router; the node owning it is the primary."""
    backup: str | None = None
    """Public address of the backup router; None = no backup."""
    primary_private: str | None = None
    """Second heartbeat path of the primary; None = same as primary."""
    backup_private: str | None = None
    """Second heartbeat path of the backup; None = same as backup."""
    backup_active: bool = False
    """lvs.cf backup_active: must be True for any failover (pulse sends no heartbeats otherwise)."""
    heartbeat_port: int = 539
    """UDP port of the heartbeat on both ends."""
    keepalive_s: float = 2.0
    """Seconds between heartbeats."""
    deadtime_s: float = 5.0
    """Silence after which the partner is declared dead."""
    monitor_links: bool = False
    """Stop taking over while a heartbeat interface has no link."""


@dataclass(frozen=True)
class VrrpInstance:
    """One keepalived vrrp_instance."""

    name: str
    """Instance name (vrrp_instance NAME)."""
    interface: str
    """Interface the adverts are sent on."""
    vrid: int
    """virtual_router_id, 1..255."""
    priority: int = 100
    """1..255; 255 = address owner."""
    initial_state: Literal["MASTER", "BACKUP"] = "BACKUP"
    """keepalived `state`: only where the instance starts."""
    advert_int_cs: int = 100
    """Advertisement interval in centiseconds (advert_int 1 = 100)."""
    preempt: bool = True
    """False with `nopreempt`: a higher-priority backup does not take over a live master."""
    preempt_delay_s: float = 0.0
    """Delay before preempting after start-up (preempt_delay)."""
    down_timer_adverts: int = 3
    """Adverts missed before a backup takes over."""
    addresses: tuple[FloatingAddress, ...] = ()
    """virtual_ipaddress entries; a missing `dev` means the instance's interface."""
    unicast_src_ip: str | None = None
    """Source address for unicast adverts; None = the interface's address."""
    unicast_peers: tuple[str, ...] = ()
    """unicast_peer addresses; () = multicast to 224.0.0.18."""


@dataclass(frozen=True)
class SyncGroup:
    """keepalived vrrp_sync_group: instances that change state together."""

    name: str
    instances: tuple[str, ...]
    """Member instance names, in file order."""


@dataclass(frozen=True)
class SyncDaemon:
    """IPVS connection synchronisation (lvs.cf syncdaemon; keepalived lvs_sync_daemon)."""

    interface: str
    """Multicast interface (syncd_iface / the lvs_sync_daemon IF)."""
    syncid: int = 0
    """0..255 (syncd_id / id); keepalived defaults it to the instance's VRID."""
    instance: str | None = None
    """keepalived: the VRRP instance whose state the daemon follows; None = both run."""
    port: int = 8848
    """UDP port of the sync messages."""
    group: str = "224.0.0.81"
    """Multicast group of the sync messages."""


@dataclass(frozen=True)
class GarpSettings:
    """Gratuitous ARP on becoming active."""

    repeat: int = 5
    """GARPs per address in a burst (vrrp_garp_master_repeat; pulse sends 5)."""
    delay_s: float = 5.0
    """Second burst after this delay; 0 = none (vrrp_garp_master_delay; pulse: none)."""
    interval_s: float = 0.0
    """Spacing within a burst (vrrp_garp_interval; pulse: 1 s)."""
    refresh_s: float = 0.0
    """Periodic GARP while master; 0 = off (vrrp_garp_master_refresh)."""
    refresh_repeat: int = 1
    """GARPs per address in each refresh."""


PULSE_GARP = GarpSettings(repeat=5, delay_s=0.0, interval_s=1.0)
"""pulse runs send_arp 5 times, 1 s apart, once per activation (spec §1.8)."""


@dataclass(frozen=True)
class HaSettings:
    """Everything a config file says about failover, for the whole pair."""

    protocol: Literal["heartbeat", "vrrp"]
    """"heartbeat" (lvs.cf, pulse) or "vrrp" (keepalived.conf)."""
    floating: tuple[FloatingAddress, ...] = ()
    """Every address moved on takeover: the VIPs, then the NAT gateway (lvs.cf)."""
    nat_router: FloatingAddress | None = None
    """lvs.cf nat_router: the real servers' gateway address and its device."""
    heartbeat: HeartbeatSettings | None = None
    """pulse settings (protocol "heartbeat")."""
    instances: tuple[VrrpInstance, ...] = ()
    """VRRP instances (protocol "vrrp")."""
    sync_groups: tuple[SyncGroup, ...] = ()
    """vrrp_sync_group blocks."""
    sync_daemon: SyncDaemon | None = None
    """Connection sync, if configured."""
    garp: GarpSettings = GarpSettings()
    """Gratuitous ARP timing."""
    vrrp_version: int = 3
    """keepalived vrrp_version (its default is 2; userlb speaks 3 only)."""


def ha_config(settings: HaSettings, local: str, instance: str | None = None,
              **extra: Any) -> HaConfig:
    """One router's HaConfig. `local` is that router's own address (pulse: its primary or
    backup address; VRRP: its address on the instance's interface). With several VRRP
    instances, `instance` names the one. `extra` sets HaConfig fields no config file holds
    (e.g. the heartbeat `key`). ValueError when something does not fit."""
    if settings.protocol == "heartbeat":
        fields = _pulse_fields(settings, local)
    else:
        fields = _vrrp_fields(settings, instance)
    fields.update(_garp_fields(settings.garp), **_sync_fields(settings.sync_daemon))
    return HaConfig(primary=local, **{**fields, **extra})


def _garp_fields(garp: GarpSettings) -> dict[str, Any]:
    return {"garp_repeat": garp.repeat, "garp_delay_s": garp.delay_s,
            "garp_interval_s": garp.interval_s, "garp_refresh_s": garp.refresh_s,
            "garp_refresh_repeat": garp.refresh_repeat}


def _sync_fields(sync: SyncDaemon | None) -> dict[str, Any]:
    if sync is None:
        return {"sync": False}
    return {"sync": True, "sync_interface": sync.interface, "syncid": sync.syncid,
            "sync_port": sync.port, "sync_group": sync.group}


def _pulse_fields(settings: HaSettings, local: str) -> dict[str, Any]:
    beat = settings.heartbeat
    if beat is None:
        raise ValueError("heartbeat settings missing")
    primary = (beat.primary, beat.primary_private, PULSE_PRIMARY_PRIORITY)
    backup = (beat.backup, beat.backup_private, PULSE_BACKUP_PRIORITY)
    if local == beat.primary:
        own, peer = primary, backup
    elif beat.backup is not None and local == beat.backup:
        own, peer = backup, primary
    else:
        raise ValueError(f"{local} is neither the primary nor the backup address")
    nat = settings.nat_router
    vip_devices = [f.device for f in settings.floating if f is not nat and f.device]
    return {"vips": tuple(f.address for f in settings.floating),
            "protocol": Protocol.HEARTBEAT, "priority": own[2],
            "keepalive_s": beat.keepalive_s, "deadtime_s": beat.deadtime_s, "failback": False,
            "heartbeat_port": beat.heartbeat_port, "peer": peer[0],
            "private_address": own[1] if own[1] != own[0] else None,
            "peer_private": peer[1] if peer[1] != peer[0] else None,
            "interface": vip_devices[0] if vip_devices else "",
            "private_interface": nat.device if nat else "",
            "nat_router": f"{nat.address}/{nat.prefixlen}" if nat else None}


def _vrrp_fields(settings: HaSettings, name: str | None) -> dict[str, Any]:
    """The instance's fields; the members of its sync group move with it, so their addresses
    join `vips`, and the first one on another interface is the NAT gateway (nat_router)."""
    inst = _pick_instance(settings, name)
    group = next((g.instances for g in settings.sync_groups if inst.name in g.instances),
                 (inst.name,))
    members = [i for i in settings.instances if i.name in group]
    addresses = list(inst.addresses) + [a for i in members if i is not inst for a in i.addresses]
    private = [a for a in addresses if a.device and a.device != inst.interface]
    gateway = private[0] if private else None
    return {"vips": tuple(dict.fromkeys(a.address for a in addresses)),
            "protocol": Protocol.VRRP, "priority": inst.priority, "vrid": inst.vrid,
            "advert_int_cs": inst.advert_int_cs, "down_timer_adverts": inst.down_timer_adverts,
            "failback": inst.preempt, "interface": inst.interface,
            "private_interface": gateway.device if gateway else "",
            "nat_router": f"{gateway.address}/{gateway.prefixlen}" if gateway else None}


def _pick_instance(settings: HaSettings, name: str | None) -> VrrpInstance:
    if name is None and len(settings.sync_groups) == 1:
        members = settings.sync_groups[0].instances
        if members and {i.name for i in settings.instances} <= set(members):
            name = members[0]           # one sync group holds every instance: its first one
    chosen = [i for i in settings.instances if name in (None, i.name)]
    if len(chosen) != 1:
        names = ", ".join(i.name for i in settings.instances) or "none"
        raise ValueError(f"name one VRRP instance (have: {names})")
    return chosen[0]
