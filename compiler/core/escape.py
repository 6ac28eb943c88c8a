"""One escaper per output syntax. Every value crosses into a target through these.

QEMU's key=value escaper lives with the QEMU pieces (cgsc.lower.qemu.keyval_escape).
"""

from __future__ import annotations

import re
import shlex
from typing import List

# A run of backslashes that ends the value or stands before a single quote.
_BACKSLASHES_BEFORE_QUOTE = re.compile(r"(\\+)(?='|$)")


def shell_word(value: str) -> str:
    """A POSIX sh word that reads back as exactly `value` (single quotes where needed).

    A backslash just inside a closing single quote is literal to sh but reads like an
    attempted escape (shellcheck SC1003), so such backslash runs go in double quotes.
    """
    if "\\" not in value:
        return shlex.quote(value)
    parts = _BACKSLASHES_BEFORE_QUOTE.split(value)
    return "".join(('"' + part.replace("\\", "\\\\") + '"') if i % 2 else shlex.quote(part)
                   for i, part in enumerate(parts) if part)


# what shlex.quote returns unchanged: a word of nothing but these characters
_SHELL_PLAIN = re.compile(r"[\w@%+=:,./-]+", re.ASCII).fullmatch


def shell_words(words) -> List[str]:
    """[shell_word(w) for w in words]; an argv's plain words (most) without a call each."""
    return [w if _SHELL_PLAIN(w) else shell_word(w) for w in words]


def shell_join(words) -> str:
    """shlex.join(words), plain words likewise."""
    return " ".join([w if _SHELL_PLAIN(w) else shlex.quote(w) for w in words])


_SYSTEMD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r",
                    "%": "%%", "$": "$$"}
_SYSTEMD_TABLE = str.maketrans({**{chr(c): f"\\x{c:02x}" for c in list(range(0x20)) + [0x7F]},
                                **_SYSTEMD_ESCAPES})


# a word with none of the table's characters: most words, which need no translate()
_SYSTEMD_PLAIN = re.compile("[^" + re.escape("".join(map(chr, _SYSTEMD_TABLE))) + "]*").fullmatch


# control characters other than tab, newline and carriage return (written \xNN)
_SYSTEMD_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]").search


def systemd_exec_word(value: str) -> str:
    """A word of an Exec*= line that systemd splits back into exactly `value`.

    Always double-quoted: that keeps `;` from being a command separator and leading
    `-@:+!` from being prefixes. Inside quotes systemd applies C unescaping, then `%`
    specifiers and `$` variables, hence the doubling.
    """
    if _SYSTEMD_PLAIN(value):
        return '"' + value + '"'
    if _SYSTEMD_CONTROL(value) is None:   # the same mapping; replace() is ~15x translate()
        return '"' + (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                      .replace("\t", "\\t").replace("\r", "\\r").replace("%", "%%")
                      .replace("$", "$$")) + '"'
    return '"' + value.translate(_SYSTEMD_TABLE) + '"'


def systemd_exec_line(words) -> str:
    """An Exec*= command: each word systemd_exec_word'd; plain words without a call each."""
    return " ".join(['"' + w + '"' if _SYSTEMD_PLAIN(w) else systemd_exec_word(w) for w in words])


def systemd_value(value: str) -> str:
    """A unit-file setting value (Description=, paths): specifiers doubled, one line."""
    if "\n" in value or "\r" in value:
        raise ValueError("systemd settings are one line")
    return value.replace("%", "%%")


# values with nothing to replace (most of them) are returned as they are
_XML_PLAIN_TEXT = re.compile("[^&<>]*").fullmatch
_XML_PLAIN_ATTR = re.compile("[^&<>'\"\n\r\t]*").fullmatch


def xml_text(value: str) -> str:
    if _XML_PLAIN_TEXT(value):
        return value
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_attr(value: str) -> str:
    """Attribute value for a single-quoted attribute; whitespace that parsers would
    normalize is written as character references."""
    if _XML_PLAIN_ATTR(value):
        return value
    return (xml_text(value).replace("'", "&apos;").replace('"', "&quot;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def xml_comment(value: str) -> str:
    """Text safe inside <!-- -->: one line of characters XML allows, no `--` (each dash
    of a run is followed by a space), no trailing `-`."""
    value = re.sub(r"-(?=-)", "- ", comment_line(value))
    return value + " " if value.endswith("-") else value


def _shown(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")


def comment_line(value: str) -> str:
    """Text safe on one comment line of any target: characters that are not printable
    (controls, line and paragraph separators, bidi overrides, noncharacters) are shown as
    escapes, and a final backslash too (a unit-file reader could continue the line)."""
    if not value.isprintable():
        value = "".join(ch if ch.isprintable() else _shown(ch) for ch in value)
    return value[:-1] + "\\x5c" if value.endswith("\\") else value


def comment_lines(value: str) -> List[str]:
    """Multi-line text (a diagnostic with its hint) as several safe comment lines."""
    return [comment_line(line) for line in value.split("\n")]


def hash_comment(value: str) -> str:
    """`# ` comment lines (shell and unit files) for text of any number of lines."""
    if value.isprintable():  # one line without escapes: most comments
        return _hash_line(value)
    return "\n".join(_hash_line(line) for line in comment_lines(value))


def _hash_line(line: str) -> str:
    """One `# ` line without trailing blanks and never ending in a backslash (which a
    unit-file reader could take as a continuation), also once the blanks are gone."""
    line = ("# " + line).rstrip()
    return line[:-1] + "\\x5c" if line.endswith("\\") else line


def systemd_path_word(value: str) -> str:
    """One entry of a space-separated path list (ReadWritePaths=, DeviceAllow=...).

    systemd unquotes these (a backslash takes the next character literally) and
    expands specifiers, but neither splits nor expands `$`.
    """
    if "\n" in value or "\r" in value:
        raise ValueError("systemd settings are one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'
