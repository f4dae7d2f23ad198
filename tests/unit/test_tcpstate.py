"""tcpstate against the text of spec/ipvs.md §3.4-§3.6, §6.16 and §6.17.

The two tables below are copied from the spec, not generated: each cell is
checked against TRANSITIONS, and the module's Markdown must reproduce them.
"""

import itertools

import numpy as np
import pytest

from userlb import tcpstate as ts

# spec/ipvs.md §3.4, "Normal table (sysctl secure_tcp=0, default)".
SPEC_NORMAL = """\
| dir | event | NONE | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| INPUT | syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| INPUT | fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | TW |
| INPUT | ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| INPUT | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | SR |
| OUTPUT | syn | SS | ES | SS | SR | SS | SS | SS | SS | SS | LI | SR |
| OUTPUT | fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| OUTPUT | ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| OUTPUT | rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
| IN-ONLY | syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| IN-ONLY | fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| IN-ONLY | ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| IN-ONLY | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
"""

# spec/ipvs.md §3.4, "Secure" table; ★ marks rows that differ from the normal table.
SPEC_SECURE = """\
| dir | event | NONE | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| INPUT ★ | syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SA |
| INPUT ★ | fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | SA |
| INPUT ★ | ack | ES | ES | SS | SR | FW | TW | CL | CW | CL | LI | SA |
| INPUT ★ | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
| OUTPUT ★ | syn | SS | ES | SS | SA | SS | SS | SS | SS | SS | LI | SA |
| OUTPUT | fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| OUTPUT | ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| OUTPUT | rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
| IN-ONLY ★ | syn | SA | ES | ES | SR | SA | SA | SA | SA | SA | SA | SA |
| IN-ONLY | fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| IN-ONLY | ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| IN-ONLY | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
"""

SPEC_CODE = {"NONE": 0, "ES": 1, "SS": 2, "SR": 3, "FW": 4, "TW": 5, "CL": 6, "CW": 7,
             "LA": 8, "LI": 9, "SA": 10}
SPEC_DIR = {"INPUT": ts.DIR_INPUT, "OUTPUT": ts.DIR_OUTPUT, "IN-ONLY": ts.DIR_INPUT_ONLY}
SPEC_EVENT = {"syn": ts.EV_SYN, "fin": ts.EV_FIN, "ack": ts.EV_ACK, "rst": ts.EV_RST}
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def spec_cells():
    """(table, dir, event, state, expected code) for every cell of both spec tables."""
    for table, text in ((0, SPEC_NORMAL), (1, SPEC_SECURE)):
        header, _, *rows = text.strip().splitlines()
        columns = [c.strip() for c in header.strip("|").split("|")][2:]
        for row in rows:
            d, e, *cells = [c.strip() for c in row.strip("|").split("|")]
            for state_name, cell in zip(columns, cells, strict=True):
                yield (table, SPEC_DIR[d.rstrip(" ★")], SPEC_EVENT[e], SPEC_CODE[state_name],
                       SPEC_CODE[cell])


CELLS = list(spec_cells())


def test_spec_tables_have_every_cell():
    assert len(CELLS) == 2 * 3 * 4 * 11
    assert ts.TRANSITIONS.shape == (2, 3, 4, 11) and ts.TRANSITIONS.dtype == np.uint8


@pytest.mark.parametrize("table,direction,event,state,expected", CELLS)
def test_transition_cell_matches_spec(table, direction, event, state, expected):
    assert ts.TRANSITIONS[table, direction, event, state] == expected


def test_markdown_is_drawn_from_the_same_arrays():
    assert ts.transitions_markdown(secure=False) == SPEC_NORMAL
    assert ts.transitions_markdown(secure=True) == SPEC_SECURE
    doc = ts.render_markdown()
    assert SPEC_NORMAL in doc and SPEC_SECURE in doc
    assert "| ESTABLISHED | 1 | ES | 900 | yes |" in doc
    assert "| UDP | 11 | – | 300 | no |" in doc


def test_state_codes_and_names():
    assert ts.STATE_NAMES == ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT",
                              "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN",
                              "SYNACK", "UDP")
    for code, name in enumerate(ts.STATE_NAMES):
        assert getattr(ts, name) == code


def test_active_states():
    active = {ts.STATE_NAMES[i] for i in np.flatnonzero(ts.ACTIVE)}
    assert active == {"ESTABLISHED", "SYN_SENT", "SYN_RECV", "SYNACK"}
    assert ts.ACTIVE.shape == (12,) and not ts.ACTIVE[ts.UDP]


def test_default_timeouts_match_spec():
    # §3.4: NONE 2, ESTABLISHED 900, SYN_SENT 120, SYN_RECV 60, FIN_WAIT 120, TIME_WAIT 120,
    # CLOSE 10, CLOSE_WAIT 60, LAST_ACK 30, LISTEN 120, SYNACK 120; §3.5: UDP 300.
    expected = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300]
    arr = ts.Timeouts().as_array()
    assert arr.dtype == np.float64
    assert arr.tolist() == expected
    assert ts.INITIAL_TIMEOUT_S == 3


def reference_event(flags: int) -> int:
    for bit, event in ((RST, ts.EV_RST), (SYN, ts.EV_SYN), (FIN, ts.EV_FIN), (ACK, ts.EV_ACK)):
        if flags & bit:
            return event
    return -1


def test_event_priority_exhaustive():
    flags = np.arange(256, dtype=np.uint8)
    assert ts.tcp_event(flags).tolist() == [reference_event(f) for f in range(256)]
    assert ts.tcp_event([SYN | ACK, FIN | ACK, RST | ACK, RST | SYN, 0x08]).tolist() == [
        ts.EV_SYN, ts.EV_FIN, ts.EV_RST, ts.EV_RST, -1]


def test_next_state_vectorised_equals_scalar_reference():
    spec = {(t, d, e, s): x for t, d, e, s, x in CELLS}
    combos = list(itertools.product(range(12), range(3), range(256)))
    states, dirs, flags = (np.array(c) for c in zip(*combos))
    for secure in (False, True):
        got = ts.next_state(states, dirs, flags, secure=secure)
        assert got.dtype == np.uint8
        want = []
        for s, d, f in combos:
            e = reference_event(f)
            want.append(ts.UDP if s == ts.UDP else ts.CLOSE if e < 0
                        else spec[(int(secure), d, e, s)])
        assert got.tolist() == want


def run_trace(packets, timeouts=ts.Timeouts()):
    """Feed (direction, flags) packets to one connection: [(state, timeout_s, active)]."""
    table = timeouts.as_array()
    state = np.array([ts.NONE], dtype=np.uint8)
    out = [("NONE", ts.INITIAL_TIMEOUT_S, False)]
    for direction, flags in packets:
        state = ts.next_state(state, [direction], [flags])
        out.append((ts.STATE_NAMES[state[0]], table[state[0]], bool(ts.ACTIVE[state[0]])))
    return out


def test_trace_6_16():
    IN, OUT = ts.DIR_INPUT, ts.DIR_OUTPUT
    packets = [(IN, SYN), (OUT, SYN | ACK), (IN, ACK), (IN, FIN | ACK), (OUT, ACK),
               (OUT, FIN | ACK), (IN, ACK)]
    # (state after, timeout, active?) from the §6.16 table; "1/0" = active, "0/1" = inactive.
    expected = [("NONE", 3, False), ("SYN_RECV", 60, True), ("SYN_RECV", 60, True),
                ("ESTABLISHED", 900, True), ("CLOSE_WAIT", 60, False),
                ("CLOSE_WAIT", 60, False), ("TIME_WAIT", 120, False), ("TIME_WAIT", 120, False)]
    assert run_trace(packets) == expected


def test_variants_6_16():
    IN, OUT = ts.DIR_INPUT, ts.DIR_OUTPUT
    est = [(IN, SYN), (OUT, SYN | ACK), (IN, ACK)]
    # Client RST in ESTABLISHED → CLOSE, 10 s, inactive.
    assert run_trace(est + [(IN, RST)])[-1] == ("CLOSE", 10, False)
    # A segment with no S/F/A/R flag (PSH alone) → CLOSE.
    assert run_trace(est + [(IN, 0x08)])[-1] == ("CLOSE", 10, False)
    assert run_trace(est + [(OUT, 0x00)])[-1] == ("CLOSE", 10, False)
    # Server-first close (§3.4): OUTPUT fin ES→FIN_WAIT, then INPUT fin FW→TIME_WAIT.
    trace = run_trace(est + [(OUT, FIN | ACK), (IN, FIN | ACK)])
    assert trace[-2:] == [("FIN_WAIT", 120, False), ("TIME_WAIT", 120, False)]
    # A SYN in TIME_WAIT goes to SYN_RECV in the table; expiring the old entry first
    # (conn_reuse_mode) is the engine's decision, not the state machine's.
    assert ts.next_state([ts.TIME_WAIT], [IN], [SYN]).tolist() == [ts.SYN_RECV]


def test_secure_table_keeps_synack_until_established():
    # With secure_tcp, a client ACK in SYN_RECV does not establish (INPUT ack SR→SR).
    assert ts.next_state([ts.SYN_RECV], [ts.DIR_INPUT], [ACK], secure=True).tolist() == [
        ts.SYN_RECV]
    assert ts.next_state([ts.SYN_RECV], [ts.DIR_OUTPUT], [SYN | ACK], secure=True).tolist() == [
        ts.SYNACK]


def test_udp_6_17():
    timeouts = ts.Timeouts().as_array()
    states = ts.next_state([ts.UDP] * 4, [ts.DIR_INPUT, ts.DIR_OUTPUT, ts.DIR_INPUT, 1],
                           [0, 0, SYN, RST])
    assert states.tolist() == [ts.UDP] * 4
    assert timeouts[states].tolist() == [300.0] * 4
    assert not ts.ACTIVE[states].any()


def test_ipvsadm_set_semantics():
    base = ts.Timeouts()
    assert base.with_ipvsadm_set(0, 0, 0) == base
    changed = base.with_ipvsadm_set(3600, 0, 30)
    assert changed.ipvsadm_timeout() == (3600, 120, 30)
    diff = changed.as_array() != base.as_array()
    assert [ts.STATE_NAMES[i] for i in np.flatnonzero(diff)] == ["ESTABLISHED", "UDP"]
    assert base.with_ipvsadm_set(0, 45, 0).fin_wait_s == 45
    assert base.with_ipvsadm_set(0, 45, 0).time_wait_s == 120  # only FIN_WAIT, not TIME_WAIT
    assert base.ipvsadm_timeout() == (900, 120, 300)
    with pytest.raises(ValueError):
        base.with_ipvsadm_set(-1, 0, 0)
    with pytest.raises(ValueError):
        base.with_ipvsadm_set(0, 0, ts.MAX_TIMEOUT_S + 1)


def test_timeouts_is_frozen_and_documented():
    import dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        ts.Timeouts().udp_s = 1
    assert [f.name for f in dataclasses.fields(ts.Timeouts)] == [
        n.lower() + "_s" for n in ts.STATE_NAMES]


def test_advance_rearms_the_timer():
    custom = ts.Timeouts().with_ipvsadm_set(1000, 0, 0).as_array()
    states, expires = ts.advance([ts.NONE, ts.SYN_RECV, ts.UDP], ts.DIR_INPUT,
                                 [SYN, ACK, 0], now=50.0, timeouts=custom)
    assert states.tolist() == [ts.SYN_RECV, ts.ESTABLISHED, ts.UDP]
    assert expires.tolist() == [110.0, 1050.0, 350.0]
    assert ts.advance([ts.NONE], 0, [SYN], 0.0)[1].tolist() == [ts.TIMEOUTS[ts.SYN_RECV]]


def test_next_state_rejects_bad_codes():
    with pytest.raises(ValueError):
        ts.next_state([12], [0], [ACK])
