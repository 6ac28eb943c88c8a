"""Bit layouts of policy and attribute words: one table encodes named flags into the
integer QEMU gets and decodes any integer back into names for reviewers."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple


class Flag(NamedTuple):
    name: str          # the spec's flag name (debug, smt, ...)
    bit: int
    sets: bool         # the flag value that sets the bit (NODBG is set by debug = false)
    default: bool = False


class Layout(NamedTuple):
    word: str                          # "policy" or "attributes"
    bit_names: Dict[int, str]          # every defined bit, as the firmware ABI names it
    flags: Tuple[Flag, ...] = ()
    fields: Tuple[Tuple[str, int], ...] = ()   # 8-bit fields: (name, shift)
    always: int = 0                    # bits cgsc always sets (SNP bit 17)

    def encode(self, table: dict) -> int:
        value = self.always
        for f in self.flags:
            if table.get(f.name, f.default) == f.sets:
                value |= 1 << f.bit
        for name, shift in self.fields:
            value |= (table.get(name, 0) & 0xFF) << shift
        return value

    def flag_path(self, path: tuple, cfg: dict, flag: str) -> tuple:
        """Where a flag was said: the flag in the named form, else the integer word, else
        the mechanism table (the flag kept its default)."""
        raw = cfg.get(self.word)
        if isinstance(raw, dict) and flag in raw:
            return path + (self.word, flag)
        return path + (self.word,) if raw is not None else path

    def flag_values(self, value: int) -> List[Tuple[str, bool]]:
        return [(f.name, bool(value >> f.bit & 1) == f.sets) for f in self.flags]

    def decode(self, value: int) -> str:
        """`0x120000 = reserved-must-be-one (bit 17) + single-socket (bit 20); smt off, ...`"""
        field_bits = 0
        for _name, shift in self.fields:
            field_bits |= 0xFF << shift
        names = [f"{self.bit_names.get(b, 'reserved')} (bit {b})"
                 for b in range(64) if value >> b & 1 and not field_bits >> b & 1]
        text = f"{self.word} {value:#x} = " + (" + ".join(names) or "no bits set")
        details = [f"{name} {'on' if on else 'off'}" for name, on in self.flag_values(value)]
        details += [f"{name} {value >> shift & 0xFF}" for name, shift in self.fields]
        return text + ("; " + ", ".join(details) if details else "")
