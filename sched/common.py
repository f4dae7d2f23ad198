"""Pieces several schedulers share: eligibility masks, the wlc core, flag bits,
row lookup by uid, and the test that tells a vectorised batch it is exact.

Mirrors the helpers of include/net/ip_vs.h (ip_vs_dest_conn_overhead) and the
scan that ip_vs_wlc.c, ip_vs_lblc.c and ip_vs_lblcr.c repeat word for word.
Does not pick for any service itself and never changes a DestTable.
"""

from __future__ import annotations

import numpy as np

from userlb.services import DEST_F_AVAILABLE, DEST_F_OVERLOAD, DestTable

# include/uapi/linux/ip_vs.h: the scheduler-private service flag bits
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020

# ipvsadm -b NAME → (bit, the one scheduler the name is valid with, or None)
_FLAG_BITS = {
    "flag-1": (SVC_F_SCHED1, None), "flag-2": (SVC_F_SCHED2, None),
    "flag-3": (SVC_F_SCHED3, None),
    "sh-fallback": (SVC_F_SCHED1, "sh"), "sh-port": (SVC_F_SCHED2, "sh"),
    "mh-fallback": (SVC_F_SCHED1, "mh"), "mh-port": (SVC_F_SCHED2, "mh"),
}

# Protocols whose first 4 L4 bytes are the ports [sh/mh: ip_vs_sh_get_port]
PORT_PROTOCOLS = (6, 17, 132)
HAS_PORTS = np.zeros(256, bool)             # proto → True for PORT_PROTOCOLS, one gather a batch
HAS_PORTS[list(PORT_PROTOCOLS)] = True


def sched_flag_bits(flags: tuple[str, ...], sched_name: str) -> int:
    """ipvsadm -b names → IP_VS_SVC_F_SCHEDn bits; sh-*/mh-* only with sh/mh."""
    bits = 0
    for flag in flags:
        try:
            bit, only = _FLAG_BITS[flag]
        except KeyError:
            raise ValueError(f"unknown scheduler flag {flag!r}") from None
        if only is not None and only != sched_name:
            raise ValueError(f"incompatible scheduler flag {flag!r} for {sched_name!r}")
        bits |= bit
    return bits


def not_overloaded(dests: DestTable) -> np.ndarray:
    return (dests.flags & DEST_F_OVERLOAD) == 0


def eligible(dests: DestTable) -> np.ndarray:
    """weight > 0 and no OVERLOAD flag: what rr, wrr, wlc, sh, mh … may pick."""
    return (dests.weight > 0) & not_overloaded(dests)


def available(dests: DestTable) -> np.ndarray:
    """eligible and IP_VS_DEST_F_AVAILABLE (dh, lblc's cached server)."""
    return eligible(dests) & ((dests.flags & DEST_F_AVAILABLE) != 0)


def conn_overhead(active: int, inact: int) -> int:
    # as ip_vs_dest_conn_overhead: (activeconns << 8) + inactconns
    return (active << 8) + inact


def wlc_pick(dests: DestTable) -> int:
    """Weighted least connection over the whole table, or -1.

    The first non-OVERLOAD server with weight > 0 is the candidate; every later
    non-OVERLOAD server replaces it only if strictly less loaded, so ties keep
    the earlier one [wlc: ip_vs_wlc_schedule, lblc/lblcr: __ip_vs_lblc_schedule].
    """
    weight = dests.weight.tolist()
    over = (dests.flags & DEST_F_OVERLOAD).tolist()
    active = dests.activeconns.tolist()
    inact = dests.inactconns.tolist()
    least, loh = -1, 0
    for row, w in enumerate(weight):
        if over[row]:
            continue
        if least < 0:
            if w > 0:
                least, loh = row, conn_overhead(active[row], inact[row])
            continue
        doh = conn_overhead(active[row], inact[row])
        # as ip_vs_wlc: (s64)loh * w(dest) > (s64)doh * w(least), no division
        if loh * w > doh * weight[least]:
            least, loh = row, doh
    return least


def u32(value: int) -> int:
    """C unsigned int arithmetic (wraps mod 2**32)."""
    return value & 0xFFFFFFFF


def s32(value: int) -> int:
    """C int arithmetic as x86 does it (two's complement wrap)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def binds_exact(dests: DestTable, picks: np.ndarray) -> bool:
    """True if binding `picks` in turn never sets OVERLOAD before a row's last pick.

    A vectorised batch computes every pick against the flags at batch start.
    Binding connection j to row r sets OVERLOAD once active+inact reaches
    u_threshold [conn: ip_vs_bind_dest]; that changes later picks only if r
    would be picked again afterwards. So the batch is exact iff for every row
    with n >= 2 picks, total + n - 1 < u_threshold.
    """
    upper = dests.u_threshold
    if not len(upper) or not upper.any():
        return True
    got = picks[picks >= 0]
    counts = np.bincount(got, minlength=len(upper))
    total = dests.activeconns + dests.inactconns
    bad = (upper > 0) & (counts >= 2) & (total + counts - 1 >= upper)
    return not bad.any()


class UidRows:
    """Maps a table of DestTable uids (-1 = empty) to current row numbers, cached.

    Table schedulers (dh, sh, mh) keep their buckets as uids, as the kernel keeps
    dest pointers, so rows shifting on add/remove never mis-point a bucket.
    """

    def __init__(self, table_uids: np.ndarray) -> None:
        self.table_uids = np.asarray(table_uids, np.int64)
        self._key: bytes | None = None
        self._rows = np.full(len(self.table_uids), -1, np.int64)
        self._usable_key: tuple | None = None
        self._usable = self._rows.astype(np.int32)

    def rows(self, dests: DestTable) -> np.ndarray:
        key = dests.uid.tobytes()
        if key != self._key:
            self._rows = rows_of_uids(dests.uid, self.table_uids)
            self._key = key
        return self._rows

    def usable(self, dests: DestTable, ok=eligible) -> np.ndarray:
        """Bucket → its row where ok(dests) allows it, else -1 (int32, read-only).

        A batch then needs one gather. Cached on the columns ok reads (uid,
        weight, flags), which change on edits and on OVERLOAD, not per batch.
        """
        key = (ok, dests.uid.tobytes(), dests.weight.tobytes(), dests.flags.tobytes())
        if key != self._usable_key:
            rows = self.rows(dests)
            allowed = np.append(ok(dests), False)[rows]         # row -1 → False
            self._usable = np.where(allowed, rows, -1).astype(np.int32)
            self._usable.flags.writeable = False
            self._usable_key = key
        return self._usable


def rows_of_uids(uids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted uid in `uids`, -1 where absent."""
    wanted = np.asarray(wanted, np.int64)
    if not len(uids):
        return np.full(len(wanted), -1, np.int64)
    order = np.argsort(uids, kind="stable")
    ordered = uids[order]
    pos = np.minimum(np.searchsorted(ordered, wanted), len(uids) - 1)
    found = ordered[pos] == wanted
    return np.where(found, order[pos], -1).astype(np.int64)
