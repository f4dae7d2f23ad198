"""bench/path.py's own options: which paths and loads a run picks (no lab here)."""

from __future__ import annotations

import pytest

from userlb.bench import path


def test_default_paths_are_the_kernel_c_and_userlb_and_userlb_without_offload():
    assert path.parse_options([]) == {}
    assert path.DEFAULT_PATHS == ("c", "userlb", "userlb:no-offload", "kernel")


def test_all_selects_every_variant_in_run_order():
    assert path.parse_options(["--paths", "all"])["paths"] == path.SHOW_ORDER
    assert set(path.SHOW_ORDER) == {"kernel", "c", *path.USERLB_VARIANTS}
    assert path.RUN_ORDER[-1] == "kernel"       # its conntrack stays out of the TUN runs


def test_a_subset_and_loads():
    opts = path.parse_options(["--paths", "userlb:2q,c", "--only", "udp,http"])
    assert opts == {"paths": ("userlb:2q", "c"), "only": ("udp", "http")}


@pytest.mark.parametrize("argv", [["--paths", "userlb,nginx"], ["--only", "icmp"],
                                  ["--paths", ""]])
def test_unknown_names_are_refused(argv):
    with pytest.raises(SystemExit):
        path.parse_options(argv)


def test_io_variants_run_small_packets_only_and_no_offload_runs_everything():
    assert path.loads_of("userlb:sqpoll", path.PARTS) == ("udp",)
    assert path.loads_of("userlb:2q", ("tcp", "http")) == ()
    assert path.loads_of("userlb:no-offload", path.PARTS) == path.PARTS
    assert path.loads_of("kernel", ("http",)) == ("http",)
    unpinned = {n for n, (_, pinned, _) in path.USERLB_VARIANTS.items() if not pinned}
    assert unpinned == {"userlb:sqpoll", "userlb:2q"}


class Capacity:
    """A fake path that delivers everything up to `pps` and loses the rest."""

    def __init__(self, pps: float) -> None:
        self.pps, self.offered = pps, []

    def measured(self, lab, pid, load, rate, seconds, **kw):
        self.offered.append(rate)
        loss = max(0.0, 1 - self.pps / rate)
        return {"offered_pps_nominal": rate, "sent_pps": rate, "loss": loss, "errors": [],
                "delivered_pps": rate * (1 - loss), "router_core_busy": 0.5,
                "load_core_busy": 0.5}


class Quiet:
    def step(self, text: str) -> None:
        pass


class FakePath:
    name, pid = "fake", None


def test_sweep_bisects_between_the_last_loss_free_and_first_lossy_rate(monkeypatch):
    cap = Capacity(56_000)
    monkeypatch.setattr(path.pathload, "measured", cap.measured)
    p = dict(path.PARAMS["full"], udp_refine_steps=2)
    steps, cut = path.sweep_udp(None, FakePath(), p, float("inf"), Quiet())
    assert not cut
    assert cap.offered == [5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000,
                           55_000, 57_500]
    assert path.loss_free(steps)["offered_pps_nominal"] == 55_000
    assert path.udp_limit(steps, path.loss_free(steps)).startswith("router core")


def test_sweep_without_refinement_and_when_nothing_passes(monkeypatch):
    cap = Capacity(57_000)
    monkeypatch.setattr(path.pathload, "measured", cap.measured)
    steps, _ = path.sweep_udp(None, FakePath(), path.PARAMS["smoke"], float("inf"), Quiet())
    assert cap.offered == [2_000, 5_000]
    cap = Capacity(100)
    monkeypatch.setattr(path.pathload, "measured", cap.measured)
    steps, _ = path.sweep_udp(None, FakePath(), dict(path.PARAMS["full"], udp_refine_steps=2),
                              float("inf"), Quiet())
    assert cap.offered == [5_000, 10_000] and path.loss_free(steps) is None
