"""A section of the incremental cache (cache.py): the records of the runs of one kind
(their targets, --strict, host profile and working directory) as the file holds them.

Columns, not an object a record: a line holds the section's suffix (JSON), a tab, its
columns (JSON: an array a field, every record at the same position in each, or one
value when every record has it), a tab and the columns of numbers, raw in this
machine's byte order (the cache is this machine's): when each record was made (int64),
how many claims it has (two uint32), the stat keys of its files (stats.py: 44 bytes a
file; the spec, the guest directory, then each artifact) and the claim hashes of all
of them (int64: exclusive, then shared; cache._claims). What many records share is a
table the columns point into: the sets of artifact names, the sets of other inputs
(each input's index in the cache's inputs and its sha256 when recorded) and the spec
directories (the directory as the spec's path names it, its real path and the spec
root found from it). A run reads its section whole: 10,000 records parse in ~2 ms, and
the keys of a block of them are compared with the keys found now in one comparison.

A record as the rest of cgsc sees it (Section[spec]): [name, [keys, [directory, real
directory, root]], made, artifact names (encoded: cache.artifact_names), inputs
([[index, sha256], ...]), report], the report being [machine, exclusive hex, shared
hex] (the usual form: no warning, no target skipped) or the dict of every field
(cache._summary). Nothing read is trusted for its type: a value cgsc would not write
makes its record a miss (cache.py), never a crash."""

from __future__ import annotations

import json
from array import array
from itertools import accumulate, chain, repeat
from typing import Dict, Iterator, List, MutableMapping, Optional, Sequence, Tuple

from .stats import KEY

# the JSON columns: an array, or one value (not an array) every record has
FIELDS = ("spec", "name", "files", "inputs", "dir", "report")
TABLES = ("artifact_sets", "input_sets", "dirs")
HEX = 16   # hex digits of one claim hash (a signed 64-bit integer)


def hex_claims(text) -> bool:
    """Whether `text` is the hex of 64-bit integers."""
    if not (type(text) is str and not len(text) % HEX and text.isascii()):
        return False
    try:
        return 2 * len(bytes.fromhex(text)) == len(text)   # (fromhex skips whitespace)
    except ValueError:
        return False


class Section(MutableMapping):
    """spec -> record: the columns read from the file, and the records stored or replaced
    in this process (`rows`; a spec there is no longer looked up in the columns)."""

    def __init__(self, line: Optional[bytes] = None):
        self.rows: Dict[str, list] = {}
        self.where: Dict[str, int] = {}   # spec -> its position in the columns
        self.name = self.files = self.inputs = self.dir = self.report = []
        self.artifact_sets = self.input_sets = self.dirs = []
        self.made, self.counts = array("q"), array("I")
        self.exclusive, self.shared = array("q"), array("q")
        self.clean = False   # no claim hash of one record's meets another's (conflicts.py)
        self.keys = b""
        self.starts: List[int] = [0]   # where each record's keys begin, in files
        self._offsets: Optional[Tuple[list, list]] = None
        if line is not None:
            self._take(line)

    def _take(self, line: bytes) -> None:
        """The columns of a section's line after its suffix, if they are columns of the
        same length with their tables and numbers for each (else no records)."""
        tab = line.find(b"\t")
        if tab < 0:
            return
        columns = _parsed(line[:tab])
        specs = columns.get("spec")
        tables = [columns.get(table) for table in TABLES]
        if (type(specs) is not list or not all(type(s) is str for s in specs)
                or not all(type(t) is list for t in tables)):
            return
        count = len(specs)
        values = [specs] + [_column(columns.get(field), count) for field in FIELDS[1:]]
        if any(v is None for v in values):
            return
        try:
            files = values[2]   # (an index past the table, or a negative one, which
            if files and not 0 <= min(files) <= max(files) < len(tables[0]):   # sizes[]
                return                                          # would take from the end)
            sizes = [2 + len(names.split("/")) if names else 2 for names in tables[0]]
            starts = list(accumulate(map(sizes.__getitem__, files), initial=0))
            where = dict(zip(specs, range(count)))
            numbers = memoryview(line)[tab + 1:]
            made, counts = _ints("q", numbers, 0, count), _ints("I", numbers, 8 * count, 2 * count)
            at = 16 * count
            keys = bytes(numbers[at:at + starts[-1] * KEY.size])
            at += len(keys)
            exclusive = _ints("q", numbers, at, sum(counts[0::2]))
            shared = _ints("q", numbers, at + 8 * len(exclusive), sum(counts[1::2]))
        except (TypeError, IndexError, AttributeError, ValueError):   # (not cgsc's)
            return
        if (len(where) != count or len(keys) != starts[-1] * KEY.size
                or len(numbers) != at + 8 * (len(exclusive) + len(shared))):
            return
        self.where, self.starts, self.keys, self.made, self.counts = (where, starts, keys,
                                                                      made, counts)
        (_spec, self.name, self.files, self.inputs, self.dir, self.report) = values
        self.artifact_sets, self.input_sets, self.dirs = tables
        self.exclusive, self.shared = exclusive, shared
        self.clean = columns.get("clean") is True

    # -- the mapping ----------------------------------------------------------------------
    def __getitem__(self, spec: str) -> list:
        record = self.rows.get(spec)
        if record is not None:
            return record
        return self.record(self.where[spec])

    def __setitem__(self, spec: str, record: list) -> None:
        self.where.pop(spec, None)
        self.rows[spec] = record

    def __delitem__(self, spec: str) -> None:
        if spec in self.rows:
            del self.rows[spec]
        else:
            del self.where[spec]

    def __iter__(self) -> Iterator[str]:
        return chain(list(self.where), list(self.rows))

    def __len__(self) -> int:
        return len(self.where) + len(self.rows)

    def __contains__(self, spec) -> bool:
        return spec in self.rows or spec in self.where

    # -- reading ------------------------------------------------------------------------
    def record_keys(self, j: int) -> bytes:
        return self.keys[self.starts[j] * KEY.size:self.starts[j + 1] * KEY.size]

    def offsets(self) -> Tuple[list, list]:
        """Where each record's exclusive and shared claims begin (in hashes; one more
        entry than records)."""
        if self._offsets is None:
            self._offsets = (list(accumulate(self.counts[0::2], initial=0)),
                             list(accumulate(self.counts[1::2], initial=0)))
        return self._offsets

    def claims_hex(self, j: int) -> Tuple[str, str]:
        """The (exclusive, shared) claims of record j, as hex."""
        exclusive, shared = self.offsets()
        return (self.exclusive[exclusive[j]:exclusive[j + 1]].tobytes().hex(),
                self.shared[shared[j]:shared[j + 1]].tobytes().hex())

    def record(self, j: int) -> list:
        """Record j as Section[spec] gives it (a value of the wrong type as it is)."""
        claims = list(self.claims_hex(j))
        report = self.report[j]
        if type(report) is str:
            summary = [report, *claims]
        elif type(report) is dict:
            summary = {**report, "claims": claims}
        else:
            summary = None
        return [self.name[j], [self.record_keys(j), _at(self.dirs, self.dir[j])],
                self.made[j], _at(self.artifact_sets, self.files[j]),
                _at(self.input_sets, self.inputs[j]), summary]

    # -- writing ------------------------------------------------------------------------
    def line(self) -> bytes:
        """The section as its line holds it after the suffix and a tab: the records kept
        from the columns as they were (a run of positions at a time), then the rows. A
        row that cgsc would not write so (a report or claims of another form, keys that
        are not for its files) is left out: a miss, compiled again."""
        out: Dict[str, list] = {field: [] for field in FIELDS}
        tables = {table: list(getattr(self, table)) for table in TABLES}   # (kept indexes
        seen = {table: {_text(v): i for i, v in enumerate(values)}         # stay valid)
                for table, values in tables.items()}
        made, counts = array("q"), array("I")
        keys: List[bytes] = []
        exclusive, shared = array("q"), array("q")
        kept = sorted((j, spec) for spec, j in self.where.items())
        offsets = self.offsets() if kept else ([0], [0])
        start = 0
        for k in range(1, len(kept) + 1):
            if k < len(kept) and kept[k][0] == kept[k - 1][0] + 1:
                continue
            first, end = kept[start][0], kept[k - 1][0] + 1
            out["spec"] += [spec for _j, spec in kept[start:k]]
            for field in FIELDS[1:]:
                out[field] += getattr(self, field)[first:end]
            made += self.made[first:end]
            counts += self.counts[2 * first:2 * end]
            keys.append(self.keys[self.starts[first] * KEY.size:self.starts[end] * KEY.size])
            exclusive += self.exclusive[offsets[0][first]:offsets[0][end]]
            shared += self.shared[offsets[1][first]:offsets[1][end]]
            start = k
        for spec, record in self.rows.items():
            try:
                name, (state, place), when, names, inputs, summary = record
                report, claims = _split(summary)
                files = 2 + len(names.split("/")) if names else 2
                if (report is None or type(state) is not bytes
                        or len(state) != files * KEY.size or type(name) is not str
                        or type(when) is not int):
                    continue
                indexes = [_index(seen[table], tables[table], value) for table, value in
                           zip(TABLES, (names, inputs, place))]
                made.append(when)
            except (TypeError, ValueError, AttributeError, OverflowError):
                continue
            for field, value in zip(FIELDS, (spec, name, *indexes, report)):
                out[field].append(value)
            keys.append(state)
            for values, data in zip((exclusive, shared), claims):
                counts.append(len(data) // 8)
                values.frombytes(data)
        columns = {field: _compact(values) for field, values in out.items()}
        columns["spec"] = out["spec"]
        columns.update(tables)
        unique = set(exclusive)   # as conflicts.Registry finds no conflict at once
        columns["clean"] = len(unique) == len(exclusive) and unique.isdisjoint(shared)
        return b"".join((json.dumps(columns, separators=(",", ":")).encode("ascii"), b"\t",
                         made.tobytes(), counts.tobytes(), *keys, exclusive.tobytes(),
                         shared.tobytes()))


def _compact(values: list):
    """A column as written: its one value when every record has it (and it is no
    array), else the array."""
    if values and type(values[0]) is not list and values.count(values[0]) == len(values):
        return values[0]
    return values


def _column(value, count: int) -> Optional[list]:
    """A column as read: an array of `count` values (None: not one)."""
    if type(value) is list:
        return value if len(value) == count else None
    return None if value is None else [value] * count


def _ints(kind: str, data: memoryview, at: int, count: int) -> array:
    """`count` numbers of array type `kind` from data[at:] (ValueError: not so many)."""
    values = array(kind)
    end = at + count * values.itemsize
    if end > len(data):
        raise ValueError("short")
    values.frombytes(data[at:end])
    return values


def _at(table: list, index):
    """table[index] for an index cgsc writes (an int in range), else None."""
    return table[index] if type(index) is int and 0 <= index < len(table) else None


def _text(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _index(seen: Dict[str, int], table: list, value) -> int:
    """The index of `value` in a table being written (added if new)."""
    text = _text(value)
    if text not in seen:
        seen[text] = len(table)
        table.append(json.loads(text))
    return seen[text]


def _split(summary) -> Tuple[object, Tuple[bytes, bytes]]:
    """(the report column's value, the claims' bytes) of a record's report; None if it
    is not one cgsc writes."""
    if type(summary) is list and len(summary) == 3 and type(summary[0]) is str:
        report, claims = summary[0], (summary[1], summary[2])
    elif type(summary) is dict and type(summary.get("claims")) is list and len(
            summary["claims"]) == 2:
        report = {k: v for k, v in summary.items() if k != "claims"}
        claims = tuple(summary["claims"])
    else:
        return None, (b"", b"")
    if not all(hex_claims(c) for c in claims):
        return None, (b"", b"")
    return report, (bytes.fromhex(claims[0]), bytes.fromhex(claims[1]))


def _parsed(text: bytes) -> dict:
    """A section's columns (written by this user's cgsc: the file's MAC holds); none if
    they are no object."""
    import gc
    collecting = gc.isenabled()
    gc.disable()   # tens of thousands of objects, none in a cycle: the passes they would
    try:           # set off cost as much as the parse
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    finally:
        if collecting:
            gc.enable()
    return parsed if isinstance(parsed, dict) else {}


def owners(indexes: Sequence[int], counts: Sequence[int]) -> array:
    """Each index repeated its count of times (the owner of each of its claims)."""
    return array("q", chain.from_iterable(map(repeat, indexes, counts)))
