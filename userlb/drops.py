"""Why the data path dropped a frame: one enum, one counter per value.

Every frame the engine reads is either written back or counted under exactly
one of these reasons (style rule 11). This module only names the reasons; the
parser, the NAT and the engine assign them, and the engine counts them.

EDGE_DROP_REASONS names the two drops outside the engine, which the control plane
reports next to the engine's (snapshot.edge_drops): frames the kernel dropped
because the TUN's queue was full (the device's tx_dropped: userlb fell behind,
the overload drop), and frames the kernel refused when userlb wrote them back.
"""

from enum import IntEnum


class DropReason(IntEnum):
    """Reason codes. 0 means "not dropped"; values are stable (they index counters)."""

    OK = 0
    # Malformed IPv4 (parse.py)
    TRUNCATED = 1            # shorter than the headers it claims (IP or L4)
    BAD_VERSION = 2          # IP version is not 4
    BAD_IHL = 3              # IHL < 5 or header longer than the frame
    BAD_TOTAL_LENGTH = 4     # total length < header length or > bytes received
    BAD_IP_CHECKSUM = 5      # IPv4 header checksum does not verify
    FRAGMENT = 6             # MF set or fragment offset != 0 (no reassembly)
    UNKNOWN_PROTOCOL = 7     # not TCP, UDP or ICMP
    BAD_L4_HEADER = 8        # TCP data offset < 5 / beyond the datagram, UDP length inconsistent
    OVERSIZE = 9             # frame filled the whole read buffer (possibly cut)
    # ICMP (icmp.py)
    BAD_ICMP_CHECKSUM = 10   # ICMP error about a connection, with a bad checksum (kernel drops too)
    BAD_ICMP_QUOTE = 11      # ICMP error whose quoted header is unusable
    ICMP_NOT_RELATED = 12    # ICMP that is neither an error about one of our connections nor for us
    # Engine decisions (engine.py)
    NO_SERVICE = 13          # to a VIP address but no (protocol, port) service matches
    NO_CONNECTION = 14       # to a VIP, no connection, and not a packet that may open one
    NO_DEST = 15             # the scheduler found no available real server
    TABLE_FULL = 16          # connection table full and nothing evictable
    DEST_GONE = 17           # the connection's real server was removed
    NOT_OURS = 18            # neither to a VIP nor from a real server of a live connection


DROP_REASON_NAMES = {r: r.name.lower() for r in DropReason}


EDGE_DROP_REASONS = {
    "tun_queue_full": "the kernel found the TUN queue full and dropped the frame before "
                      "userlb read it (the device's tx_dropped): overload",
    "write_refused": "the kernel refused a frame userlb wrote back to the TUN",
}
