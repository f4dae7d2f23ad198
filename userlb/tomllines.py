"""Line numbers for TOML key paths, because tomllib reports none.

`KeyLines(text).locate(("service", 1, "real", 0, "address"))` gives the line of
that key in the source. The scanner knows just enough TOML to find keys:
`[table]` and `[[array]]` headers (array-of-tables indexes are counted, and
`[[service.real]]` belongs to the latest `[[service]]`), `key =` lines with
bare, quoted and dotted keys, and values that span lines (multi-line strings
and arrays), whose inner lines are never mistaken for keys or headers.

It does not validate: it runs only on text tomllib has already accepted. Keys
inside inline tables and array elements have no line of their own, so
`locate` falls back to the nearest enclosing key or header that has one.
Lines are counted as tomllib counts them (by "\\n"), so CRLF files agree.
"""

from __future__ import annotations

import re
import tomllib

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

KeyPath = tuple[str | int, ...]


class KeyLines:
    """Map of key paths to 1-based line numbers for one TOML text."""

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        self._aot_count: dict[KeyPath, int] = {}
        self._scan(text)

    def locate(self, path: KeyPath) -> int:
        """Line of `path`, else of its nearest recorded ancestor; 0 if none."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 0

    # -- scanning -------------------------------------------------------------

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        state = _ValueState()
        for lineno, line in enumerate(text.split("\n"), 1):
            if state.open:
                state.feed(line, 0)
                continue
            start = len(line) - len(line.lstrip(" \t"))
            if start == len(line) or line[start] in "#\r":
                continue
            if line.startswith("[[", start):
                segments, _ = _parse_key(line, start + 2)
                table = self._header(segments, lineno, array=True)
            elif line[start] == "[":
                segments, _ = _parse_key(line, start + 1)
                table = self._header(segments, lineno, array=False)
            else:
                segments, end = _parse_key(line, start)
                self._record(table, segments, lineno)
                state.feed(line, line.index("=", end) + 1)

    def _header(self, segments: list[str], lineno: int, array: bool) -> KeyPath:
        path: KeyPath = ()
        for n, segment in enumerate(segments):
            path += (segment,)
            if array and n == len(segments) - 1:
                index = self._aot_count.get(path, 0)
                self._aot_count[path] = index + 1
                self.lines.setdefault(path, lineno)
                path += (index,)
            elif path in self._aot_count:
                path += (self._aot_count[path] - 1,)
            self.lines.setdefault(path, lineno)
        return path

    def _record(self, table: KeyPath, segments: list[str], lineno: int) -> None:
        path = table
        for segment in segments:
            path += (segment,)
            self.lines.setdefault(path, lineno)


def _parse_key(line: str, i: int) -> tuple[list[str], int]:
    """Parse a (dotted) key at line[i]; returns its segments and the index after it."""
    segments = []
    while True:
        while i < len(line) and line[i] in " \t":
            i += 1
        if line[i] == '"':
            end = _end_of_basic_string(line, i + 1)
            segments.append(tomllib.loads(f"k = {line[i:end]}")["k"])
        elif line[i] == "'":
            end = line.index("'", i + 1) + 1
            segments.append(line[i + 1:end - 1])
        else:
            match = _BARE_KEY.match(line, i)
            end = match.end()
            segments.append(match.group())
        i = end
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == ".":
            i += 1
            continue
        return segments, i


def _end_of_basic_string(line: str, i: int) -> int:
    """Index just past the closing quote of a one-line basic string whose body starts at i."""
    while line[i] != '"':
        i += 2 if line[i] == "\\" else 1
    return i + 1


class _ValueState:
    """Where a value stands after a line: open brackets and an unclosed multi-line string."""

    def __init__(self) -> None:
        self.depth = 0
        self.delim: str | None = None

    @property
    def open(self) -> bool:
        return self.depth > 0 or self.delim is not None

    def feed(self, line: str, i: int) -> None:
        while i < len(line):
            if self.delim is not None:
                i = self._close_multiline(line, i)
                continue
            ch = line[i]
            if ch == "#":
                return
            if line.startswith('"""', i) or line.startswith("'''", i):
                self.delim = line[i:i + 3]
                i += 3
            elif ch == '"':
                i = _end_of_basic_string(line, i + 1)
            elif ch == "'":
                i = line.index("'", i + 1) + 1
            else:
                self.depth += (ch in "[{") - (ch in "]}")
                i += 1

    def _close_multiline(self, line: str, i: int) -> int:
        delim = self.delim
        while i < len(line):
            if delim == '"""' and line[i] == "\\":
                i += 2
            elif line.startswith(delim, i):
                i += 3
                # TOML allows one or two quotes right before the closing delimiter
                while i < len(line) and line[i] == delim[0]:
                    i += 1
                self.delim = None
                return i
            else:
                i += 1
        return i
