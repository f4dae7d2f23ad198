"""Applying a reload's changes to a running engine (config.diff → engine), as ipvsadm would.

ServiceRemoved → -D, ServiceAdded → -A plus its -a's, ServiceChanged → -E
(scheduler, flags, persistence, match rules), RealRemoved → -d, RealAdded → -a,
RealEdited → -e (weight, thresholds), TimeoutsChanged → --set. Established
connections stay in the table; a removed real server's connections are
dropped as dest_gone, as the kernel drops them. A real server that health
checks currently hold down keeps weight 0: its new weight comes with its
recovery. Router settings that need a restart are reported, not applied.
Pure: runs on the data-path thread and returns what it did, line by line.
"""

from __future__ import annotations

from userlb import destctl, svcctl
from userlb.configdiff import (RealAdded, RealEdited, RealRemoved, RouterChanged,
                               ServiceAdded, ServiceChanged, ServiceRemoved, TimeoutsChanged)
from userlb.services import ip_to_int

SECRET_ROUTER_KEYS = frozenset({"web_token"})   # never echoed into replies or logs


def _service(engine, svc) -> int:
    index = svcctl.find_service(engine, svc.key)
    if index < 0:
        raise KeyError(f"service {svc.protocol} {svc.vip}:{svc.port} is not running")
    return index


def _edit_real(engine, change: RealEdited, is_down) -> str:
    new = change.new
    down = is_down(change.service.key, (ip_to_int(new.address), new.port))
    engine.edit_dest(_service(engine, change.service), new.address, new.port,
                     None if down else new.weight, u_threshold=new.u_threshold,
                     l_threshold=new.l_threshold)
    return f"-e {new.address}:{new.port} {', '.join(change.names)}" + (
        " (down: weight applies on recovery)" if down and "weight" in change.names else "")


def apply_changes(engine, changes, is_down=lambda skey, rkey: False) -> list[str]:
    """Apply `changes` in order; returns one line per change (applied or not and why)."""
    done = []
    for c in changes:
        if isinstance(c, RouterChanged):
            if c.name == "trace_connections":
                engine.trace_budget = max(engine.trace_budget, int(c.new))
                done.append(f"router.{c.name} = {c.new}")
            else:
                old, new = (("(hidden)",) * 2 if c.name in SECRET_ROUTER_KEYS
                            else (repr(c.old), repr(c.new)))
                done.append(f"router.{c.name}: {old} → {new} needs a restart "
                            "(not applied)" if c.restart_required else
                            f"router.{c.name} = {new} (next start)")
        elif isinstance(c, TimeoutsChanged):
            t = c.new
            engine.timeouts = engine.timeouts.with_ipvsadm_set(t.tcp, t.tcpfin, t.udp)
            engine.timeout_of = engine.timeouts.as_array()
            done.append(f"--set {t.tcp} {t.tcpfin} {t.udp}")
        elif isinstance(c, ServiceRemoved):
            svcctl.delete_service(engine, _service(engine, c.service))
            done.append(f"-D {c.service.protocol} {c.service.vip}:{c.service.port}")
        elif isinstance(c, ServiceAdded):
            svcctl.add_service(engine, c.service)
            done.append(f"-A {c.service.protocol} {c.service.vip}:{c.service.port} "
                        f"with {len(c.service.reals)} real server(s)")
        elif isinstance(c, ServiceChanged):
            svcctl.edit_service(engine, _service(engine, c.old), c.new)
            done.append(f"-E {c.new.protocol} {c.new.vip}:{c.new.port} {', '.join(c.names)}")
        elif isinstance(c, RealRemoved):
            destctl.remove_dest(engine, _service(engine, c.service), c.real.address,
                                c.real.port)
            done.append(f"-d {c.real.address}:{c.real.port}")
        elif isinstance(c, RealAdded):
            destctl.add_dest(engine, _service(engine, c.service), c.real)
            done.append(f"-a {c.real.address}:{c.real.port} weight {c.real.weight}")
        elif isinstance(c, RealEdited):
            done.append(_edit_real(engine, c, is_down))
    return done
