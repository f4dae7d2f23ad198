"""bench/path.py's own options: which paths and loads a run picks (no lab here)."""

from __future__ import annotations

import pytest

from userlb.bench import path


def test_default_paths_are_the_kernel_c_and_userlb_with_and_without_offload():
    assert path.parse_options([]) == {}
    assert path.DEFAULT_PATHS == ("c", "userlb", "userlb+offload", "kernel")


def test_all_selects_every_variant_in_run_order():
    assert path.parse_options(["--paths", "all"])["paths"] == path.SHOW_ORDER
    assert set(path.SHOW_ORDER) == {"kernel", "c", *path.USERLB_VARIANTS}
    assert path.RUN_ORDER[-1] == "kernel"       # its conntrack stays out of the TUN runs


def test_a_subset_and_loads():
    opts = path.parse_options(["--paths", "userlb+2q,c", "--only", "udp,http"])
    assert opts == {"paths": ("userlb+2q", "c"), "only": ("udp", "http")}


@pytest.mark.parametrize("argv", [["--paths", "userlb,nginx"], ["--only", "icmp"],
                                  ["--paths", ""]])
def test_unknown_names_are_refused(argv):
    with pytest.raises(SystemExit):
        path.parse_options(argv)


def test_io_variants_run_small_packets_only_and_offload_runs_everything():
    assert path.loads_of("userlb+sqpoll", path.PARTS) == ("udp",)
    assert path.loads_of("userlb+2q", ("tcp", "http")) == ()
    assert path.loads_of("userlb+offload", path.PARTS) == path.PARTS
    assert path.loads_of("kernel", ("http",)) == ("http",)
    unpinned = {n for n, (_, pinned, _) in path.USERLB_VARIANTS.items() if not pinned}
    assert unpinned == {"userlb+sqpoll", "userlb+2q"}
