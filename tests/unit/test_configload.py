"""configload: one entry point for TOML, lvs.cf and keepalived.conf; `userlb check-config`.

The three files in examples/ describe the same lab balancer, so they must load to the same
services, router and timeouts (and TOML and keepalived.conf to the same health checks).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from userlb import cli
from userlb.config import ConfigError
from userlb.configload import load_any, loads_any, sniff

EXAMPLES = Path(__file__).parents[2] / "examples"
FILES = ("userlb.toml", "lvs.cf", "keepalived.conf")


@pytest.mark.parametrize("path, text, fmt", [
    ("a.toml", "primary = 1.2.3.4\n", "toml"),
    ("lvs.cf", "virtual_server x {\n", "lvscf"),
    ("x.conf", "[router]\ntun = 'x'\n", "toml"),
    ("x.conf", "! comment\nvirtual_server 1.2.3.4 80 {\n}\n", "keepalived"),
    ("x", "  include /etc/keepalived/*.conf\n", "keepalived"),
    ("x", "# comment\nserial_no = 1\nprimary = 198.18.1.2\n", "lvscf"),
    ("x", "virtual web {\n", "lvscf"),
    ("x", 'service = [{ protocol = "tcp" }]\n', "toml"),
    ("x", "", "toml"),
])
def test_sniff(path, text, fmt):
    assert sniff(path, text) == fmt


def test_the_three_examples_describe_the_same_balancer():
    configs = [load_any(EXAMPLES / name)[0] for name in FILES]
    toml, lvs, keepalived = configs
    assert toml.services == lvs.services == keepalived.services
    assert toml.router == lvs.router == keepalived.router
    assert toml.timeouts == lvs.timeouts == keepalived.timeouts
    assert toml.health == keepalived.health            # same keepalived HTTP_GET timing
    assert [h.on_failure for h in (toml.health + lvs.health)] == ["quiesce", "quiesce"]
    assert lvs.ha.protocol == "heartbeat" and keepalived.ha.protocol == "vrrp"
    assert [f.address for f in lvs.ha.floating] == [f.address for f in keepalived.ha.floating]


def test_errors_are_path_line_message_in_every_format():
    cases = {"x.toml": "[router]\ntabel_size = 1\n", "x.cf": "primary = 198.18.1.2\nbogus = 1\n",
             "x.conf": "virtual_server 198.18.0.1 80 {\n    lb_kind DR\n}\n"}
    for path, text in cases.items():
        with pytest.raises(ConfigError) as info:
            loads_any(text, path)
        assert str(info.value.issues[0]).startswith(f"{path}:2: ")


@pytest.mark.parametrize("name", FILES)
def test_check_config_accepts_the_examples(name, capsys):
    assert cli.main(["check-config", str(EXAMPLES / name)]) == 0
    assert capsys.readouterr().out == f"{EXAMPLES / name}: OK (1 service(s))\n"


def test_check_config_prints_warnings_and_errors(tmp_path, capsys):
    warned = tmp_path / "k.conf"
    warned.write_text("virtual_server 198.18.0.1 80 {\n    frobnicate\n}\n")
    assert cli.main(["check-config", str(warned)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{warned}: OK (1 service(s), 1 warning(s))\n"
    assert err == f"{warned}:2: warning: unknown keyword 'frobnicate' in virtual_server; ignored\n"
    broken = tmp_path / "lvs.cf"
    broken.write_text("primary = 198.18.1.2\r\nkeepalive 2\r\n")
    assert cli.main(["check-config", str(broken)]) == 2
    assert capsys.readouterr().err == f"{broken}:2: keepalive: equal (=) expected after command\n"
