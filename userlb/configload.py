"""Load any of the three config formats: native TOML, Piranha lvs.cf, keepalived.conf.

What it does: `load_any(path)` reads the file once, decides its format with
`sniff` and returns `(Config, warnings)`, or raises ConfigError whose issues
are all `path:line: message`. Warnings are ConfigIssues whose message starts
with "warning: " (the TOML reader has none).

How the format is chosen: by extension first (`.toml` → TOML, `.cf` → lvs.cf),
then by content: a line starting with `[` is TOML (lvs.cf and keepalived.conf
never have one); a line starting with a keepalived top-level keyword
(global_defs, vrrp_instance, virtual_server, include, …) is keepalived.conf;
a `key = value` line with an lvs.cf global key, or a `virtual NAME {` line, is
lvs.cf; anything else is read as TOML.

What it does not do: merge files or apply anything (control.py applies).
"""

from __future__ import annotations

import re
from os import PathLike
from typing import Literal

from . import config, keepalivedconf, lvscf
from .config import Config, ConfigIssue
from .conftext import read_text
from .lvscfparse import GLOBAL_KEYS

Format = Literal["toml", "lvscf", "keepalived"]

_KEEPALIVED = re.compile(r"^\s*(global_defs|vrrp_instance|vrrp_sync_group|vrrp_script|"
                         r"virtual_server|virtual_server_group|include|static_ipaddress)\b",
                         re.MULTILINE)
_LVSCF = re.compile(r"^[ \t]*(?:(?:" + "|".join(GLOBAL_KEYS) + r")[ \t]*=[ \t]*[^\s\[{\"']"
                    r"|virtual[ \t]+\S+[ \t]+\{)", re.MULTILINE)
_TOML_TABLE = re.compile(r"^\s*\[", re.MULTILINE)


def sniff(path: str, text: str) -> Format:
    """The format of `text` (read from `path`), by extension, then by content."""
    name = path.lower()
    if name.endswith(".toml"):
        return "toml"
    if name.endswith(".cf"):
        return "lvscf"
    if _TOML_TABLE.search(text):
        return "toml"
    if _KEEPALIVED.search(text):
        return "keepalived"
    if _LVSCF.search(text):
        return "lvscf"
    return "toml"


def loads_any(text: str, path: str = "<string>", fmt: Format | None = None
              ) -> tuple[Config, tuple[ConfigIssue, ...]]:
    """Parse `text` in format `fmt` (sniffed when None); (Config, warnings) or ConfigError."""
    fmt = fmt or sniff(path, text)
    if fmt == "lvscf":
        return lvscf.loads(text, path)
    if fmt == "keepalived":
        return keepalivedconf.loads(text, path)
    return config.loads(text, path), ()


def load_any(path: str | PathLike[str]) -> tuple[Config, tuple[ConfigIssue, ...]]:
    """Read `path` in whichever of the three formats it is; (Config, warnings) or ConfigError."""
    return loads_any(read_text(path), str(path))
