"""Health checks for real servers (userlb.health): check specs, pure policy, probes, runner.

The pure parts are re-exported here; the EDGE modules (probes, runner) are imported explicitly
(`from userlb.health.runner import HealthRunner`) so that importing the policy pulls in no I/O.
"""

from userlb.health.policy import (CheckState, HealthChanged, HealthEvent, HealthPolicy,
                                  QuorumChanged, quorum_next, step)
from userlb.health.presets import (check_from_table, keepalived_knobs, nanny_knobs,
                                   service_health_from_tables, with_preset)
from userlb.health.schedule import CheckSchedule
from userlb.health.spec import (CHECK_TYPES, Check, CheckId, ExternalCheck, HttpCheck, ProbeResult,
                                RealKey, SendExpectCheck, ServiceHealth, ServiceKey, TcpCheck,
                                parse_status_codes, probe_target, real_key)

__all__ = [
    "CHECK_TYPES", "Check", "CheckId", "CheckSchedule", "CheckState", "ExternalCheck",
    "HealthChanged", "HealthEvent", "HealthPolicy", "HttpCheck", "ProbeResult", "QuorumChanged",
    "RealKey", "SendExpectCheck", "ServiceHealth", "ServiceKey", "TcpCheck", "check_from_table",
    "keepalived_knobs", "nanny_knobs", "parse_status_codes", "probe_target", "quorum_next",
    "real_key", "service_health_from_tables", "step", "with_preset",
]
