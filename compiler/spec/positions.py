"""Best-effort map from TOML key paths to line numbers.

The TOML parser exposes no positions, so this scanner walks text that it has already
accepted and records the line of every key, array element and table header.
Paths look like the parsed data: ("disk", 0, "path"), ("qemu", "extra-args", 2).
"""

from __future__ import annotations

import json
from typing import Dict, List, Tuple

Path = Tuple[object, ...]
_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: Dict[Path, int] = {}
        self.array_tables: Dict[Path, int] = {}
        self.columns: Dict[Path, int] = {}   # 1-based column of the key (or element)

    # -- low level -------------------------------------------------------
    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def advance(self, n: int = 1) -> None:
        chunk = self.text[self.pos:self.pos + n]
        self.line += chunk.count("\n")
        self.pos += n

    def skip_ws(self, newlines: bool = False) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#" and newlines:
                self.skip_comment()
            else:
                return

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.advance((len(self.text) if end < 0 else end) - self.pos)

    def record(self, path: Path, line: int, start: int = -1) -> None:
        self.lines.setdefault(path, line)
        if start >= 0 and path not in self.columns:
            self.columns[path] = start - self.text.rfind("\n", 0, start)

    # -- grammar ---------------------------------------------------------
    def run(self) -> Dict[Path, int]:
        table: Path = ()
        while self.pos < len(self.text):
            self.skip_ws(newlines=True)
            if self.pos >= len(self.text):
                break
            if self.peek(2) == "[[":
                self.advance(2)
                table = self.header(array=True)
            elif self.peek() == "[":
                self.advance()
                table = self.header(array=False)
            else:
                self.keyval(table)
            self.skip_ws()
            if self.peek() == "#":
                self.skip_comment()
        return self.lines

    def resolve(self, keys: List[str]) -> Path:
        """Insert the current index of every enclosing array of tables."""
        out: Path = ()
        for key in keys:
            out += (key,)
            if out in self.array_tables:
                out += (self.array_tables[out],)
        return out

    def header(self, array: bool) -> Path:
        line = self.line
        start = self.pos - (2 if array else 1)
        self.skip_ws()
        keys = self.key()
        self.skip_ws()
        self.advance(2 if array else 1)
        if array:
            parent = self.resolve(keys[:-1]) + (keys[-1],)
            self.array_tables[parent] = self.array_tables.get(parent, -1) + 1
            self.record(parent, line, start)
        path = self.resolve(keys)
        for i in range(1, len(keys)):  # [a.b.c] also defines a and a.b
            self.record(self.resolve(keys[:i]), line, start)
        self.record(path, line, start)
        return path

    def key(self) -> List[str]:
        keys = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c == '"' or c == "'":
                keys.append(self.string())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] in _BARE:
                    self.pos += 1
                keys.append(self.text[start:self.pos])
            self.skip_ws()
            if self.peek() != ".":
                return keys
            self.advance()

    def keyval(self, table: Path) -> None:
        line = self.line
        start = self.pos
        keys = self.key()
        self.skip_ws()
        self.advance()  # "="
        self.skip_ws()
        path = table + tuple(keys)
        for i in range(1, len(keys) + 1):
            self.record(table + tuple(keys[:i]), line, start)
        self.value(path)

    def value(self, path: Path) -> None:
        self.record(path, self.line, self.pos)
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    return
                self.value(path + (index,))
                index += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.advance()
        elif c == "{":
            self.advance()
            while True:
                self.skip_ws()
                if self.peek() == "}":
                    self.advance()
                    return
                self.keyval(path)
                self.skip_ws()
                if self.peek() == ",":
                    self.advance()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def string(self) -> str:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.advance(3)
            end = self.text.find(quote * 3, self.pos)
            while self.text[end + 3:end + 4] == quote:  # up to two quotes may end the body
                end += 1
            body = self.text[self.pos:end]
            self.advance(end + 3 - self.pos)
            return body
        self.advance()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != quote:
            self.pos += 2 if (quote == '"' and self.text[self.pos] == "\\") else 1
        body = self.text[start:self.pos]
        self.advance()
        if quote == '"':
            try:
                body = json.loads('"' + body + '"')
            except ValueError:
                pass
        return body


def key_columns(text: str) -> Dict[Path, int]:
    """Column (1-based) of every key path's key, or of an array element, in valid TOML."""
    scanner = _Scanner(text)
    try:
        scanner.run()
    except (IndexError, ValueError):
        return {}
    return scanner.columns


def key_lines(text: str) -> Dict[Path, int]:
    """Line (1-based) of every key path in already-valid TOML text."""
    try:
        return _Scanner(text).run()
    except (IndexError, ValueError):  # best effort: never break a build over positions
        return {}
