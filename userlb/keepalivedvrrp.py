"""keepalived `global_defs`, `vrrp_instance` and `vrrp_sync_group` → HaSettings and timeouts.

What it does: `Vrrp` collects, block by block, what the VRRP side of a
keepalived.conf says: from global_defs the GARP timing
(vrrp_garp_master_delay/repeat/refresh/refresh_repeat, vrrp_garp_interval),
vrrp_version, lvs_sync_daemon and lvs_timeouts; each vrrp_instance (state,
interface, virtual_router_id, priority, advert_int, nopreempt, preempt_delay,
down_timer_adverts, version, virtual_ipaddress with dev/label,
unicast_src_ip, unicast_peer); each vrrp_sync_group's members. `settings()`
returns HaSettings(protocol "vrrp") or None when there is no instance.

What it does not do: VRRPv2 authentication, tracking (track_script,
track_interface, …), notify scripts, use_vmac, vrrp_script, IPv6 (warned or
refused). userlb speaks VRRPv3 only, so an effective version 2 (keepalived's
default without `vrrp_version 3`) is warned: keepalived peers must run v3.
Mirrors keepalived 2.2.7 vrrp_parser.c and global_parser.c (spec §2.6).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .config import MAX_TIMEOUT_S, TimeoutConfig
from .conftext import Issues, interface, unicast
from .hasettings import (FloatingAddress, GarpSettings, HaSettings, SyncDaemon, SyncGroup,
                         VrrpInstance)
from .keepalivedlex import Bad, Node, dispatch, store

KEEPALIVED_VRRP_VERSION = 2
"""keepalived's vrrp_version when global_defs does not set it."""
_GLOBAL_QUIET = ("router_id", "notification_email", "notification_email_from", "smtp_server",
                 "smtp_connect_timeout", "smtp_helo_name", "enable_script_security",
                 "script_user", "max_auto_priority", "process_names", "lvs_id")
_GLOBAL_UNSUPPORTED = ("vrrp_mcast_group4", "vrrp_mcast_group6", "vrrp_strict", "lvs_flush",
                       "lvs_flush_on_stop", "vrrp_skip_check_adv_addr", "vrrp_startup_delay",
                       "vrrp_lower_prio_no_advert", "vrrp_higher_prio_send_advert",
                       "vrrp_garp_lower_prio_delay", "vrrp_garp_lower_prio_repeat",
                       "vrrp_min_garp", "vrrp_gna_interval", "vrrp_garp_extra_if",
                       "net_namespace", "net_namespace_ipvs", "instance", "use_pid_dir",
                       "dynamic_interfaces", "vrrp_check_unicast_src", "checker_process_name")
_INSTANCE_UNSUPPORTED = ("authentication", "track_interface", "track_script", "track_file",
                         "track_process", "track_bfd", "notify", "notify_master",
                         "notify_backup", "notify_fault", "notify_stop", "use_vmac",
                         "vmac_xmit_base", "mcast_src_ip", "mcast_dst_ip", "accept",
                         "no_accept", "virtual_ipaddress_excluded", "virtual_routes",
                         "virtual_rules", "promote_secondaries", "lower_prio_no_advert",
                         "higher_prio_send_advert", "strict_mode", "garp_master_delay",
                         "garp_master_repeat", "garp_master_refresh",
                         "garp_master_refresh_repeat", "garp_lower_prio_delay",
                         "garp_lower_prio_repeat", "dont_track_primary", "skip_check_adv_addr",
                         "unicast_fault_no_peer", "kernel_rx_buf_size")
_ADDRESS_OPTIONS = ("dev", "label", "brd", "broadcast", "scope", "peer", "metric", "table")
_ADDRESS_FLAGS = ("no_track", "home", "-nodad", "nodad", "noprefixroute", "autojoin")


def _seconds_cs(node: Node) -> int:
    centis = round(node.timer(low=0.01) * 100)
    if not 1 <= centis <= 4095:
        raise Bad(f"must be 0.01..40.95 seconds (VRRPv3), got '{node.arg()}'")
    return centis


def _iface(node: Node) -> str:
    try:
        return interface(node.arg())
    except ValueError as exc:
        raise Bad(str(exc)) from None


def _ip(text: str) -> str:
    if ":" in text:
        raise Bad(f"'{text}': IPv6 is not supported by userlb")
    try:
        return unicast(text)
    except ValueError as exc:
        raise Bad(str(exc)) from None


def floating_address(node: Node, default_dev: str) -> FloatingAddress:
    """One virtual_ipaddress line: IP[/LEN] [dev IF] [label IF:x] [brd IP] [scope S] …"""
    address, _, length = node.keyword.partition("/")
    if length and not (length.isdigit() and int(length) <= 32):
        raise Bad(f"bad prefix length '/{length}'")
    options: dict[str, str] = {}
    words = list(node.args)
    while words:
        word = words.pop(0)
        if word in _ADDRESS_OPTIONS and words:
            options[word] = words.pop(0)
        elif word not in _ADDRESS_FLAGS:
            raise Bad(f"unknown address option '{word}'")
    device = options.get("dev", default_dev)
    if "dev" in options:
        interface(device)
    return FloatingAddress(_ip(address), int(length or 32), device, options.get("label", ""))


@dataclass
class Vrrp:
    """The VRRP and global parts of one keepalived.conf, gathered block by block."""

    issues: Issues
    instances: list[VrrpInstance] = field(default_factory=list)
    instance_nodes: list[tuple[Node, int | None]] = field(default_factory=list)
    """Each instance's node and its own `version` (None = the global one)."""
    groups: list[tuple[Node, SyncGroup]] = field(default_factory=list)
    garp: dict[str, Any] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)
    version: int | None = None
    sync: tuple[Node, dict[str, Any]] | None = None

    # -- global_defs --------------------------------------------------------------------------

    def global_defs(self, node: Node) -> None:
        garp = partial(store, self.garp)
        handlers = {
            "vrrp_version": lambda n: setattr(self, "version", n.integer(2, 3)),
            "vrrp_garp_master_delay": garp("delay_s", lambda n: n.timer()),
            "vrrp_garp_master_repeat": garp("repeat", lambda n: n.integer(0, 1000)),
            "vrrp_garp_master_refresh": garp("refresh_s", lambda n: n.timer()),
            "vrrp_garp_master_refresh_repeat": garp("refresh_repeat", lambda n: n.integer(0, 1000)),
            "vrrp_garp_interval": garp("interval_s", lambda n: n.timer()),
            "lvs_sync_daemon": self._sync_daemon,
            "lvs_timeouts": self._lvs_timeouts,
        }
        dispatch(node.children(), handlers, "global_defs", self.issues,
                 unsupported=_GLOBAL_UNSUPPORTED, quiet=_GLOBAL_QUIET)

    def _sync_daemon(self, node: Node) -> None:
        """lvs_sync_daemon IF [[inst] NAME] [id N] [maxlen N] [port N] [ttl N] [group IP]"""
        values: dict[str, Any] = {"interface": _iface(node)}
        words = list(node.args[1:])
        while words:
            word = words.pop(0)
            if word in ("id", "port", "group", "maxlen", "ttl", "inst") and not words:
                raise Bad(f"'{word}' needs a value")
            if word == "id":
                values["syncid"] = _int_word(words.pop(0), 0, 255)
            elif word == "port":
                values["port"] = _int_word(words.pop(0), 1, 65535)
            elif word == "group":
                values["group"] = _multicast(words.pop(0))
            elif word in ("maxlen", "ttl"):
                words.pop(0)
            else:
                values["instance"] = words.pop(0) if word == "inst" else word
        self.sync = (node, values)

    def _lvs_timeouts(self, node: Node) -> None:
        words = list(node.args)
        while words:
            name = words.pop(0)
            if name not in ("tcp", "tcpfin", "udp") or not words:
                raise Bad("expected [tcp S] [tcpfin S] [udp S]")
            self.timeouts[name] = _int_word(words.pop(0), 0, MAX_TIMEOUT_S)

    def timeout_config(self) -> TimeoutConfig:
        return TimeoutConfig(**{**vars(TimeoutConfig()), **self.timeouts})

    # -- vrrp_instance and vrrp_sync_group ------------------------------------------------------

    def instance(self, node: Node) -> None:
        errors = len(self.issues.errors)
        values: dict[str, Any] = {}
        addresses: list[Node] = []
        peers: list[str] = []
        put = partial(store, values)
        handlers = {
            "state": put("initial_state", _state), "interface": put("interface", _iface),
            "virtual_router_id": put("vrid", lambda n: n.integer(1, 255)),
            "priority": put("priority", lambda n: n.integer(1, 255)),
            "advert_int": put("advert_int_cs", _seconds_cs),
            "nopreempt": put("preempt", lambda n: False), "preempt": lambda n: None,
            "preempt_delay": put("preempt_delay_s", lambda n: _bounded(n.timer(), 1000)),
            "down_timer_adverts": put("down_timer_adverts", lambda n: n.integer(1, 100)),
            "version": put("version", lambda n: n.integer(2, 3)),
            "unicast_src_ip": put("unicast_src_ip", lambda n: _ip(n.arg())),
            "unicast_peer": lambda n: peers.extend(_ip(p.keyword) for p in n.children()),
            "virtual_ipaddress": lambda n: addresses.extend(n.children()),
        }
        dispatch(node.children(), handlers, f"vrrp_instance {node.arg()}", self.issues,
                 unsupported=_INSTANCE_UNSUPPORTED, quiet=("smtp_alert", "debug"))
        self._finish_instance(node, values, addresses, peers, errors)

    def _finish_instance(self, node: Node, values: dict[str, Any], addresses: list[Node],
                         peers: list[str], errors: int) -> None:
        name = node.arg()
        for key, name_in_values in (("interface", "interface"), ("virtual_router_id", "vrid")):
            if name_in_values not in values:
                self.issues.error(node.path, node.line, f"vrrp_instance {name}: missing '{key}'")
        floating = []
        for line in addresses:
            try:
                floating.append(floating_address(line, values.get("interface", "")))
            except (Bad, ValueError) as exc:
                self.issues.error(line.path, line.line, f"virtual_ipaddress: {exc}")
        version = values.pop("version", None)
        if len(self.issues.errors) > errors:
            return
        if not floating:
            self.issues.warn(node.path, node.line, f"vrrp_instance {name}: no virtual_ipaddress")
        if values.get("preempt") is False and values.get("initial_state") == "MASTER":
            self.issues.warn(node.path, node.line, f"vrrp_instance {name}: nopreempt needs "
                                                   "state BACKUP (keepalived ignores it)")
        self.instances.append(VrrpInstance(name=name, addresses=tuple(floating),
                                           unicast_peers=tuple(peers), **values))
        self.instance_nodes.append((node, version))

    def sync_group(self, node: Node) -> None:
        members: list[str] = []
        handlers = {"group": lambda n: members.extend(w for c in n.children() for w in c.words)}
        dispatch(node.children(), handlers, f"vrrp_sync_group {node.arg()}", self.issues,
                 unsupported=("notify", "notify_master", "notify_backup", "notify_fault",
                              "notify_stop", "track_interface", "track_script", "track_file",
                              "track_process", "track_bfd", "global_tracking",
                              "sync_group_tracking_weight"),
                 quiet=("smtp_alert",))
        self.groups.append((node, SyncGroup(node.arg(), tuple(members))))

    # -- the result ---------------------------------------------------------------------------

    def settings(self) -> HaSettings | None:
        """HaSettings for every instance read, or None when there is none."""
        if not self.instances:
            if self.groups:
                node = self.groups[0][0]
                self.issues.warn(node.path, node.line, "vrrp_sync_group without any "
                                                       "vrrp_instance; ignored")
            return None
        self._check_instances()
        floating: dict[str, FloatingAddress] = {}
        for instance in self.instances:
            for address in instance.addresses:
                floating.setdefault(address.address, address)
        return HaSettings("vrrp", tuple(floating.values()), instances=tuple(self.instances),
                          sync_groups=self._sync_groups(), sync_daemon=self._sync_daemon_settings(),
                          garp=GarpSettings(**self.garp),
                          vrrp_version=self.version or KEEPALIVED_VRRP_VERSION)

    def _check_instances(self) -> None:
        seen: dict[tuple[str, int], int] = {}
        for instance, (node, version) in zip(self.instances, self.instance_nodes):
            key = (instance.interface, instance.vrid)
            if key in seen:
                self.issues.error(node.path, node.line, f"vrrp_instance {instance.name}: "
                                  f"virtual_router_id {instance.vrid} is already used on "
                                  f"{instance.interface} (line {seen[key]})")
            seen.setdefault(key, node.line)
        default = self.version or KEEPALIVED_VRRP_VERSION
        node = next((n for n, own in self.instance_nodes if (own or default) == 2), None)
        if node is not None:
            self.issues.warn(node.path, node.line, "VRRP version 2 (keepalived's default without "
                                                   "'vrrp_version 3'): userlb speaks VRRPv3 only; "
                                                   "set vrrp_version 3 on keepalived peers")

    def _sync_groups(self) -> tuple[SyncGroup, ...]:
        names = {i.name for i in self.instances}
        groups = []
        for node, group in self.groups:
            for member in group.instances:
                if member not in names:
                    self.issues.warn(node.path, node.line, f"vrrp_sync_group {group.name}: "
                                                           f"no vrrp_instance {member}; ignored")
            groups.append(SyncGroup(group.name, tuple(m for m in group.instances if m in names)))
        return tuple(groups)

    def _sync_daemon_settings(self) -> SyncDaemon | None:
        if self.sync is None:
            return None
        node, values = self.sync
        instance = next((i for i in self.instances if i.name == values.get("instance")), None)
        if "instance" in values and instance is None:
            self.issues.error(node.path, node.line, f"lvs_sync_daemon: no vrrp_instance "
                                                    f"{values['instance']}")
        if "syncid" not in values:       # keepalived: the instance's VRID, else 0
            values["syncid"] = instance.vrid if instance else 0
        return SyncDaemon(**values)


def _state(node: Node) -> str:
    state = node.arg().upper()
    if state not in ("MASTER", "BACKUP"):
        raise Bad(f"expected MASTER or BACKUP, got '{node.arg()}'")
    return state


def _bounded(value: float, high: float) -> float:
    if value > high:
        raise Bad(f"must be at most {high:g} seconds, got {value:g}")
    return value


def _multicast(text: str) -> str:
    try:
        group = ipaddress.IPv4Address(text)
    except ValueError:
        group = None
    if group is None or not group.is_multicast:
        raise Bad(f"group must be an IPv4 multicast address, got '{text}'")
    return str(group)


def _int_word(text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise Bad(f"expected an integer in {low}..{high}, got '{text}'")
    return int(text)
