"""keepalived.conf: tokenizer, `include`, and the block tree, with file and line on every node.

What it does: reads the main file and every file it includes into one tree of
`Node`s (`keyword args… [{ children }]`), each carrying the path and line it
came from, so an error inside an included file names that file. Lexical rules
(keepalived.conf(5), lib/parser.c): one statement per line; `#` or `!` at the
start of a word begins a comment; `"…"` is one word without its quotes; `{`
and `}` are words of their own even when written against another word; a `{`
alone on a line opens the block of the statement above it; LF, CRLF and lone
CR end lines. `include GLOB` may appear anywhere (inside blocks too); a
relative pattern is relative to the directory of the file that includes it,
matches are read in sorted order, and a file that includes itself, directly or
through others, is an error ("include cycle"). Also the value accessors every
block reader uses (`Node.integer`, `.timer`, `.flag`), `store`, and `dispatch`, which
runs a handler per keyword and turns unknown keywords into warnings, as
keepalived does ("Unknown keyword").

What it does not do: `$NAME=` parameters, `@host` conditional lines,
`~SEQ(…)` (warned and skipped); give meaning to keywords (keepalivedlvs,
keepalivedcheck, keepalivedvrrp do). File access goes through the injected
`read`/`expand` callables.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from .config import ConfigError
from .conftext import Issues, numbered_lines, read_text

TRUE_WORDS = ("on", "true", "yes", "1")
FALSE_WORDS = ("off", "false", "no", "0")
MAX_TIMER_S = 86400 * 31
"""Largest timer accepted (userlb's limit; keepalived's is larger)."""


class Bad(ValueError):
    """A value userlb cannot accept; `dispatch` reports it as `path:line: keyword: message`."""


@dataclass(frozen=True)
class Node:
    """One statement: its words (keyword first), where it is, and its block if it opens one."""

    words: tuple[str, ...]
    path: str
    line: int
    block: tuple["Node", ...] | None = None
    """Child statements; None when the statement opens no block."""

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> tuple[str, ...]:
        return self.words[1:]

    def arg(self, index: int = 0) -> str:
        if index >= len(self.args):
            raise Bad("missing argument")
        return self.args[index]

    def integer(self, low: int, high: int, index: int = 0) -> int:
        text = self.arg(index)
        try:
            value = int(text, 10)
        except ValueError:
            raise Bad(f"integer expected, got '{text}'") from None
        if not low <= value <= high:
            raise Bad(f"must be in {low}..{high}, got {value}")
        return value

    def timer(self, index: int = 0, low: float = 0.0) -> float:
        """Seconds, decimals allowed (keepalived read_timer)."""
        text = self.arg(index)
        try:
            value = float(text)
        except ValueError:
            raise Bad(f"number of seconds expected, got '{text}'") from None
        if not low <= value <= MAX_TIMER_S:      # also refuses nan
            raise Bad(f"must be in {low:g}..{MAX_TIMER_S} seconds, got '{text}'")
        return value

    def flag(self) -> bool:
        """A keyword alone means on; an optional on/off argument says which (get_value_bool)."""
        if not self.args:
            return True
        word = self.args[0].lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise Bad(f"expected on|off|true|false|yes|no, got '{self.args[0]}'")
        return word in TRUE_WORDS

    def children(self) -> tuple["Node", ...]:
        if self.block is None:
            raise Bad("expected a '{' block")
        return self.block

    def text(self) -> str:
        return " ".join(self.words)


Handler = Callable[[Node], None]


def store(values: dict[str, Any], key: str, read: Callable[[Node], Any]) -> Handler:
    """A handler that puts read(node) into values[key]."""
    return lambda node: values.__setitem__(key, read(node))


def dispatch(nodes: tuple[Node, ...], handlers: dict[str, Handler], where: str, issues: Issues,
             unsupported: tuple[str, ...] = (), quiet: tuple[str, ...] = ()) -> None:
    """Run handlers[keyword](node) for each node. `unsupported` keywords are known to keepalived
    but have no effect in userlb (warned); `quiet` ones are accepted silently; any other
    keyword is unknown (warned and ignored, block included)."""
    for node in nodes:
        key = node.keyword
        try:
            if key in handlers:
                handlers[key](node)
            elif key in unsupported:
                issues.warn(node.path, node.line, f"{key}: not supported by userlb; ignored")
            elif key not in quiet:
                issues.warn(node.path, node.line, f"unknown keyword '{key}' in {where}; ignored")
        except Bad as exc:
            issues.error(node.path, node.line, f"{key}: {exc}")


# -- tokens ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    text: str
    kind: str          # "word", "{", "}", "eol"
    path: str
    line: int


def split_words(line: str) -> list[tuple[str, str]]:
    """(quote, word) for each word of a line: comments dropped, quotes removed, braces
    separate; quote is '"' for a quoted word (so a quoted "{" is not a brace)."""
    words, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
        elif c in "#!":
            break
        elif c == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise ValueError("unterminated quoted string")
            words.append(('"', line[i + 1:end]))
            i = end + 1
        elif c in "{}":
            words.append(("", c))
            i += 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '{}"':
                j += 1
            words.append(("", line[i:j]))
            i = j
    return words


@dataclass
class _Braces:
    """Open blocks of one file: the statement text each '{' opened, for error messages."""

    opened: list[tuple[int, str]] = field(default_factory=list)
    statement: list[str] = field(default_factory=list)
    fresh: bool = True
    line: int = 0

    def accept(self, kind: str, word: str, number: int = 0) -> bool:
        """Track one token; False for a '}' that closes nothing in this file."""
        if kind == "word":
            if self.fresh:
                self.statement, self.fresh, self.line = [], False, number
            self.statement.append(word)
        elif kind == "{":
            self.opened.append((self.line, " ".join(self.statement) or "{"))
            self.statement, self.fresh = [], True
        else:
            if not self.opened:
                return False
            self.opened.pop()
            self.statement, self.fresh = [], True
        return True


class _Reader:
    def __init__(self, issues: Issues, read: Callable[[str], str],
                 expand: Callable[[str], list[str]]) -> None:
        self.issues, self.read, self.expand = issues, read, expand

    def tokens(self, text: str, path: str, stack: tuple[str, ...]) -> Iterator[_Token]:
        """The tokens of one file, includes expanded. Blocks must close in the file that
        opens them: what is left open at its end is reported and closed there."""
        self.issues.reading(path)
        state = _Braces()
        for number, line in numbered_lines(text):
            stripped = line.lstrip()
            if stripped[:1] in ("$", "@", "~"):
                self.issues.warn(path, number, "parameters, conditional (@) and sequence (~) "
                                               "lines are not supported by userlb; line ignored")
                continue
            try:
                words = split_words(line)
            except ValueError as exc:
                self.issues.error(path, number, str(exc))
                continue
            if words and words[0] == ("", "include"):
                yield from self.include([w for _, w in words[1:]], path, number, stack)
                continue
            for quote, word in words:
                kind = word if (not quote and word in ("{", "}")) else "word"
                if state.accept(kind, word, number):
                    yield _Token(word, kind, path, number)
                else:
                    self.issues.error(path, number, "unexpected '}' (no block is open)")
            state.fresh = True
            yield _Token("", "eol", path, number)
        for number, what in reversed(state.opened):
            self.issues.error(path, number, f"end of file inside the block '{what}' "
                                            "opened here: missing '}'")
            yield _Token("}", "}", path, number)

    def include(self, args: list[str], path: str, number: int,
                stack: tuple[str, ...]) -> Iterator[_Token]:
        if len(args) != 1:
            self.issues.error(path, number, "include: expected one file name or pattern")
            return
        pattern = os.path.join(os.path.dirname(path), args[0])
        names = sorted(self.expand(pattern))
        if not names:
            if glob.has_magic(args[0]):
                self.issues.warn(path, number, f"include: no file matches '{args[0]}'")
            else:
                self.issues.error(path, number, f"include: cannot read '{pattern}': "
                                                "No such file or directory")
        for name in names:
            real = os.path.realpath(name)
            if real in stack:
                chain = " -> ".join([*stack[stack.index(real):], real])
                self.issues.error(path, number, f"include cycle: {chain}")
                continue
            try:
                text = self.read(name)
            except (OSError, ValueError) as exc:
                self.issues.error(path, number, f"include: cannot read '{name}': {exc}")
                continue
            yield from self.tokens(text, name, (*stack, real))


def read_file(name: str) -> str:
    """An included file's text; ValueError (with the reason) if it cannot be read."""
    try:
        return read_text(name)
    except ConfigError as exc:
        raise ValueError(exc.issues[0].message) from None


def parse_text(text: str, path: str, issues: Issues, *, read: Callable[[str], str] = read_file,
               expand: Callable[[str], list[str]] = glob.glob) -> tuple[Node, ...]:
    """The tree of `text` (read from `path`), includes expanded; problems go to `issues`."""
    reader = _Reader(issues, read, expand)
    tokens = list(reader.tokens(text, path, (os.path.realpath(path),)))
    nodes, _ = _block(tokens, 0, issues)
    return nodes


# -- tree -----------------------------------------------------------------------------------

def _block(tokens: list[_Token], i: int, issues: Issues) -> tuple[tuple[Node, ...], int]:
    """The statements from tokens[i] to the '}' closing this block (or the end); the reader
    has balanced the braces of every file already."""
    nodes: list[Node] = []
    words: list[_Token] = []

    def flush() -> None:
        if words:
            nodes.append(Node(tuple(t.text for t in words), words[0].path, words[0].line))
            words.clear()

    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.kind == "word":
            words.append(token)
        elif token.kind == "{":
            head = _head(nodes, words, token, issues)
            words.clear()
            children, i = _block(tokens, i, issues)
            nodes.append(replace(head, block=children))
        else:
            flush()
            if token.kind == "}":
                break
    flush()
    return tuple(nodes), i


def _head(nodes: list[Node], words: list[_Token], brace: _Token, issues: Issues) -> Node:
    """The statement a '{' opens: the words before it, or a block-less statement on an
    earlier line (keepalived accepts the brace on a line of its own)."""
    if words:
        return Node(tuple(t.text for t in words), words[0].path, words[0].line)
    if nodes and nodes[-1].block is None:
        return nodes.pop()
    issues.error(brace.path, brace.line, "'{' without a keyword before it")
    return Node(("{",), brace.path, brace.line)
