"""One escaper per output syntax. Every value crosses into a target through these.

QEMU's key=value escaper lives with the QEMU pieces (cgsc.qemu.keyval_escape).
"""

from __future__ import annotations

import shlex


def shell_word(value: str) -> str:
    """A POSIX sh word that reads back as exactly `value` (single quotes where needed)."""
    return shlex.quote(value)


_SYSTEMD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r",
                    "%": "%%", "$": "$$"}
_SYSTEMD_TABLE = str.maketrans({**{chr(c): f"\\x{c:02x}" for c in list(range(0x20)) + [0x7F]},
                                **_SYSTEMD_ESCAPES})


def systemd_exec_word(value: str) -> str:
    """A word of an Exec*= line that systemd splits back into exactly `value`.

    Always double-quoted: that keeps `;` from being a command separator and leading
    `-@:+!` from being prefixes. Inside quotes systemd applies C unescaping, then `%`
    specifiers and `$` variables, hence the doubling.
    """
    return '"' + value.translate(_SYSTEMD_TABLE) + '"'


def systemd_value(value: str) -> str:
    """A unit-file setting value (Description=, paths): specifiers doubled, one line."""
    if "\n" in value or "\r" in value:
        raise ValueError("systemd settings are one line")
    return value.replace("%", "%%")


def xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_attr(value: str) -> str:
    """Attribute value for a single-quoted attribute; whitespace that parsers would
    normalize is written as character references."""
    return (xml_text(value).replace("'", "&apos;").replace('"', "&quot;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def xml_comment(value: str) -> str:
    """Text safe inside <!-- -->: no `--`, no trailing `-`."""
    value = value.replace("--", "- -")
    return value + " " if value.endswith("-") else value


def comment_line(value: str) -> str:
    """Text safe on one comment line of any target: control characters shown escaped."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in value)


def systemd_path_word(value: str) -> str:
    """One entry of a space-separated path list (ReadWritePaths=, DeviceAllow=...).

    systemd unquotes these (a backslash takes the next character literally) and
    expands specifiers, but neither splits nor expands `$`.
    """
    if "\n" in value or "\r" in value:
        raise ValueError("systemd settings are one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'
