"""The incremental cache, OUT/.cgsc/cache.json: which guests `cgsc check` or `cgsc build`
found up to date, so that the next run compiles only the specs whose inputs changed.

A guest is recorded when its artifacts on disk were compared with what its spec builds
and found equal. Its record holds the stat (device, inode, size, mtime, ctime, mode) of
the spec, of the guest directory and of every artifact, the sha256 of every other file
the compile read (bases, measured boot files, ID keys), the real path and spec root of
the spec's directory (which the recorded paths follow from), and what the run reports
for it (its warnings, skipped targets, machine type, the hashes of its claims on its
host). The guest is up to date, and neither compiled nor compared, only while all of
that holds:
- the spec, the guest directory and each artifact have the recorded stat. A guest is
  recorded only when none of those times is within MARGIN of the comparison: a file
  written within one timestamp tick of its comparison can change again without changing
  either time (a same-size rewrite), so such a guest is compiled and compared again
  (git's racily clean entries), and only a later comparison records it. (A record's
  stat is compared for equality, so its times stay that old: the rule needs no second
  look when the record is read.) A spec path that is a symlink or names a directory is
  never recorded;
- the spec's directory resolves to the recorded real path and root;
- every other file read has the recorded sha256: proven by its stat under the same rule,
  else read and hashed again;
- the whole cache was written for this environment (cache_env.fingerprint()): cgsc's
  version and the content of its modules, schema and template files, Python and the
  dependencies' versions and every CGSC_* environment variable; each record also for
  the same targets (-t), --strict, host profile and working directory (specs are keyed
  by the path given).
Anything else is a miss: the guest is compiled and compared as without a cache. The
file's header with its inputs and each of its sections are keyed (BLAKE2b) with a secret
in OUT/.cgsc/key (cache_file.py): a cache that is truncated, corrupted, of another format
or environment, written elsewhere (committed to a repository, copied with the output
directory) or forged, too large, or not a regular file is ignored and replaced, and so
is a section that fails its MAC when a run reads it (a run checks only its own section:
the others are megabytes it does not need); without a usable key there is no cache.
Nothing outside the output directory is read or written for it. It is data, never code:
a header (JSON, with the table of sections: where each is and its MAC), a line of the
inputs (JSON), then a section for each suffix (the targets, --strict, host and working
directory of the runs that wrote it: `check` and `check --all`, a hook run in a
subdirectory and CI at the top, keep theirs apart), its records as columns
(cache_section.py), checked and parsed only by a run with that suffix. It is written
whole and renamed into place under the output directory's lock: exclusive in a build,
shared in `check` (checks racing one another each write a complete cache; the last
rename wins). `--no-cache` neither reads nor writes it.

Reading it is most of what a run of a large unchanged fleet does: ~60,000 stat calls for
10,000 guests. valid_indexes() has threads take them, a block of records at a time and
without the interpreter's lock (stats.batch), while this one loads what the guests that
miss will need; the keys of a block are compared with the recorded ones in one
comparison, and the claims of the guests that hold are taken from the section's arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from array import array
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.diagnostics import Diagnostic
from ..spec.paths import directory_root
from . import cache_file, stats
from .cache_env import code_digest, cwd, fingerprint
from .cache_section import Section, owners
from .outdir import PRIVATE, open_root, plain
from .stats import FIELDS, FROM_CWD, KEY, NO_LINK, NOFOLLOW, entry, spread, unpacked

FORMAT = "cgsc-incremental-cache"
VERSION = 4   # 4: sections of columns (cache_section.py)
_DOTS = ("", os.curdir, os.pardir)   # a spec path ending so names a directory
# a guest's stat entries (stats.batch) begin with its spec's path: from the working
# directory, not followed, no symlink (cgsc records none); then Cache._template()'s
_SPEC = entry(FROM_CWD | NOFOLLOW | NO_LINK, "")[:-1]
MARGIN_NS = 2_000_000_000   # timestamps this close to a record are not trusted: file
#                             systems with 1-2 s timestamps (FAT, ext3), clock steps


# -- records ----------------------------------------------------------------------------

CACHEABLE_TARGETS = ("shell", "systemd", "libvirt", "kubevirt", "reference-values")


def _split_spec(spec: str) -> Tuple[str, str]:
    """(the directory a spec path names, as Cache._place takes it, its last part): "/x"
    is in "/", "x" in "" (the working directory): neither is the other."""
    head, sep, tail = spec.rpartition(os.sep)
    return head or sep, tail


def artifact_names(encoded: str, name: str) -> List[str]:
    """A record's artifact names: "/"-separated, "%" standing for the guest's name (no
    artifact name has either: outdir.plain)."""
    return encoded.replace("%", name).split("/") if encoded else []


# A guest's report (fleet._report: the Result fields its compile gives) as JSON: values of
# these types only (anything else: the guest is not recorded); tuples as arrays; its claim
# hashes (conflicts.hashed: the same in every run) as two hex strings (_claims), one
# short string for the JSON parser (a record is read for every guest of every run).
REPORT_FIELDS = ("name", "diagnostics", "skipped", "machine", "claims")


class _Unrecordable(Exception):
    pass


def _summary(report: dict):
    """A report as JSON: [machine type, claims...] in the usual case (no warning, no target
    skipped), else every field (_encode); None when it cannot be recorded exactly."""
    if set(report) != set(REPORT_FIELDS) or not isinstance(report["name"], str):
        return None
    try:
        claims = _claims(report["claims"])
        if (not report["diagnostics"] and not report["skipped"]
                and isinstance(report["machine"], str)):
            return [report["machine"], *claims]
        return {field: claims if field == "claims" else _encode(value)
                for field, value in report.items()}
    except _Unrecordable:
        return None


def _claims(claims) -> list:
    """(exclusive, shared) claim hashes as [hex of the exclusive ones, hex of the shared
    ones], each as signed 64-bit integers in this machine's byte order (the cache is this
    machine's; its section holds them raw: cache_section.py)."""
    try:
        exclusive, shared = claims
        return [array("q", exclusive).tobytes().hex(), array("q", shared).tobytes().hex()]
    except (TypeError, ValueError, OverflowError):
        raise _Unrecordable("claims") from None


def _encode(value):
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return value
    if kind is tuple or kind is list:
        return [_encode(v) for v in value]
    if kind is Diagnostic:
        return {"d": [value.rule, [_encode(p) for p in value.path], value.message,
                      value.hint, value.severity, value.file, value.line, value.column]}
    raise _Unrecordable(kind.__name__)


def _strings(values, count: int) -> tuple:
    values = tuple(values)
    if len(values) != count or not all(isinstance(v, str) for v in values):
        raise ValueError("not a record")
    return values


def _key_path(values) -> tuple:
    path = tuple(values)
    if not all(isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool))
               for p in path):
        raise ValueError("not a key path")
    return path


def _decode(value):
    """_encode's value back, every part checked for its type (ValueError if one is wrong:
    the record is then a miss, never a crash later)."""
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return value
    if kind is list:
        return tuple(_decode(v) for v in value)
    if kind is dict and len(value) == 1 and "d" in value:
        rule, path, message, hint, severity, file, line, column = value["d"]
        _strings((rule, message, hint, severity, file), 5)
        if severity not in ("error", "warning") or not all(type(n) is int for n in (line, column)):
            raise ValueError("not a diagnostic")
        return Diagnostic(rule, _key_path(path), message, hint, severity, file, line, column)
    raise ValueError("not a report")


def _report(name: str, summary) -> tuple:
    """(diagnostics, skipped, machine) of a report recorded in full (_summary: a dict;
    its claims are read with every record's: Claims.take)."""
    if type(summary) is not dict or set(summary) != set(REPORT_FIELDS) - {"claims"}:
        raise ValueError("not a report")
    report = {field: _decode(value) for field, value in summary.items()}
    diagnostics, skipped = report["diagnostics"], report["skipped"]
    if (report["name"] != name or type(report["machine"]) is not str
            or type(diagnostics) is not tuple or type(skipped) is not tuple
            or not all(type(d) is Diagnostic for d in diagnostics)
            or not all(type(why) is tuple for why in skipped)):
        raise ValueError("not a report")   # (each field of the type fleet.Result gives it)
    for why in skipped:   # (target, rule, reason)
        _strings(why, 3)
    return diagnostics, skipped, report["machine"]


class Claims:
    """The claim hashes of the guests taken from the cache, as conflicts.Registry holds
    them: arrays of hashes, and of their owners' indexes (owners(): made only when two
    hashes meet, which a fleet without conflicts never needs). A section's are decoded
    at once and taken a run of consecutive records at a time (take())."""

    def __init__(self) -> None:
        self.exclusive, self.shared = array("q"), array("q")
        self._runs: List[Tuple[int, list, list]] = []   # first owner, claim counts
        self.clean = True   # no hash of one guest's meets another's (all from one clean
        #                     section: a part of a set without a conflict has none)

    def take(self, section: Section, hits: List[Tuple[int, int]]) -> None:
        """Take the claims of the guests `hits` ((index, position in `section`), in
        order)."""
        if not hits:
            return
        # (one section's only, each of its records once: a spec named twice is two
        # guests whose claims meet, which the section's clean flag knows nothing of)
        self.clean = (section.clean and not self._runs
                      and len({j for _index, j in hits}) == len(hits))
        decoded = section.exclusive, section.shared
        offsets, counts = section.offsets(), (section.counts[0::2], section.counts[1::2])
        start = 0
        for k in range(1, len(hits) + 1):
            if k < len(hits) and hits[k][0] == hits[k - 1][0] + 1 and (
                    hits[k][1] == hits[k - 1][1] + 1):
                continue
            (first, j), (_last, end) = hits[start], hits[k - 1]
            self.exclusive += decoded[0][offsets[0][j]:offsets[0][end + 1]]
            self.shared += decoded[1][offsets[1][j]:offsets[1][end + 1]]
            self._runs.append((first, counts[0][j:end + 1], counts[1][j:end + 1]))
            start = k

    def owners(self, offset: int = 0) -> Tuple[array, array]:
        """The owner of each hash in `exclusive` and `shared` (its guest's index), each
        `offset` further on."""
        out = []
        for which in (1, 2):
            made = array("q")
            for run in self._runs:
                made += owners(range(run[0] + offset, run[0] + offset + len(run[which])),
                               run[which])
            out.append(made)
        return out[0], out[1]


class Cache:
    """One invocation's view of OUT/.cgsc/cache.json (load()); forked workers inherit it."""

    def __init__(self, root: str, host: Optional[dict], secret: Optional[bytes],
                 code_hint: Optional[dict] = None, fingerprint_: str = "",
                 doc: Optional[dict] = None, replace: bool = False):
        self.root, self.secret = root, secret   # the key (None: not read yet, or none)
        self.host = "" if host is None else hashlib.sha256(
            json.dumps(host, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()
        self.code_hint, self.fingerprint = code_hint, fingerprint_
        self.cwd = cwd() or ""   # "": removed (only absolute spec paths open from there)
        self.inputs: List[list] = list(doc["inputs"]) if doc else []
        # suffix (the targets, --strict and host of a run: suffix()) -> spec -> record; a
        # section of the file is checked and parsed when a run with its suffix needs it
        # (_raw until then: the file's bytes, where its records are, its line and its MAC)
        self.guests: Dict[str, Section] = {}
        self._raw: Dict[str, tuple] = dict(doc["sections"]) if doc else {}
        self.index = {e[0]: i for i, e in enumerate(self.inputs)
                      if isinstance(e, list) and e and isinstance(e[0], str)}
        self.now = time.time_ns()
        self.dirty = replace   # a cache there that is not trusted: replaced even if empty
        self._known: Dict[int, Optional[str]] = {}
        self._places: Dict[str, list] = {}   # spec directory: [it, real path, root]
        self._fd: Optional[int] = None   # the output directory, while records are validated

    def key(self) -> Optional[bytes]:
        """This user's key, read (or made) when first needed: a run that records nothing
        never makes one. None in another user's output directory: the cache is its
        owner's (a .cgsc of root's in it would stop the owner's builds)."""
        if self.secret is None:
            try:
                if os.stat(self.root).st_uid != os.geteuid():
                    return None
            except OSError:
                return None
            try:   # the private directory first (a check may be the first to write there)
                os.mkdir(os.path.join(self.root, PRIVATE), 0o700)
            except OSError:
                pass
            self.secret = cache_file.secret(self.root, create=True)
        return self.secret

    def suffix(self, requested: Sequence[str], strict: bool = False) -> str:
        """What a record's key holds besides its spec: the targets asked for (-t), --strict,
        the host profile and the working directory (last: _directory())."""
        # (check --all takes the targets from manifests: any JSON value; str() of one that
        # is no string names no target, so no record of such a run is ever made)
        return "\n".join(("", ",".join(map(str, requested)), "strict" if strict else "",
                          self.host, self.cwd))

    def records(self, suffix: str) -> Section:
        """spec -> record of the runs with this suffix (parsed now if not yet: a cache
        holds a section for each set of targets it was used with, check --all's among
        them, and a run reads only its own)."""
        records = self.guests.get(suffix)
        if records is None:
            records = Section()
            if suffix in self._raw:
                raw, begin, end, start, expected = self._raw.pop(suffix)
                intact = cache_file.checking(self.secret, expected, memoryview(raw)[start:end])
                parsed = Section(raw[begin:end])
                if intact():
                    records = parsed
                else:   # damaged or planted: none of it is trusted, and it is replaced
                    self.dirty = True
            self.guests[suffix] = records
        return records

    # -- validation ---------------------------------------------------------------------
    def valid_many(self, items, suffix: str, pending=(), claims: Optional[Claims] = None,
                   helpers: int = 0, meanwhile=None) -> List[int]:
        """The indexes of `items` ((index, spec), ...), in order, whose record still
        holds: its spec, guest directory and artifacts have the recorded stat keys, its
        spec directory the recorded real path and root, every other input the recorded
        sha256; the claims of each go to `claims`. The record's time rule needs no check
        here: a record is made only when all those times are older than MARGIN
        (observe()), and equal stats are equal times. The stats are taken in blocks by
        `helpers` threads besides this one (stats.spread) while this one runs
        `meanwhile()`; the keys of a block of records are compared at once. (A record
        stored by this process is not checked again by it.)"""
        if self.secret is None:
            return []
        claims = Claims() if claims is None else claims
        section = self.records(suffix)
        blocks: List[list] = []
        hits: List[Tuple[int, int]] = []
        recorded, starts, size = section.keys, section.starts, KEY.size

        def use(b: int, result) -> None:
            block = blocks[b]
            if isinstance(result, Exception):   # (out of memory): no verdict, misses
                return
            keys, _failed = result   # (a failed entry: zeros, never a file's key)
            block, consecutive = block
            first, last = block[0][1], block[-1][1]
            if consecutive and keys == recorded[starts[first] * size:starts[last + 1] * size]:
                hits.extend(block)   # (the usual case: records j, j + 1, ..., all holding)
                return
            at = 0
            for index, j in block:
                end = at + (starts[j + 1] - starts[j]) * size
                if keys[at:end] == recorded[starts[j] * size:starts[j + 1] * size]:
                    hits.append((index, j))
                at = end
        spread(self._fd, self._planned(items, section, pending, blocks), helpers, use, meanwhile)
        hits.sort()
        claims.take(section, hits)
        return [index for index, _j in hits]

    _BLOCK = 500   # records a batch of stats

    def _planned(self, items: Sequence[Tuple[int, str]], section: Section, pending,
                 blocks: list):
        """The stat entries (stats.batch) of the files of `items`' records, a block of
        items at a time, each block (a list of (index, position in the columns), and
        whether those positions are j, j + 1, ... in that order) put in `blocks` as its
        entries are yielded. Records that cannot hold are in none:
        made later than now, of a pending guest, a spec directory or input that is not
        as recorded (checked once each, and for each record only if one is not)."""
        where, names, files = section.where, section.name, section.files
        templates = [self._template(names) for names in section.artifact_sets]
        bad = self._unusable(section, pending)
        for at in range(0, len(items), self._BLOCK):
            block: List[Tuple[int, int]] = []
            entries: List[str] = []
            count = runs = 0
            previous = -2
            for index, spec in items[at:at + self._BLOCK]:
                j = where.get(spec)
                if j is None or j in bad:
                    continue
                try:
                    template, size = templates[files[j]]
                    if size:
                        entries.append(f"{_SPEC}{spec}{template.replace('%', names[j])}")
                        block.append((index, j))
                        count += size
                        runs += j != previous + 1
                        previous = j
                except (TypeError, IndexError, AttributeError):
                    continue
            try:
                blob = "".join(entries).encode("utf-8", "surrogateescape")
            except UnicodeError:   # a name that is no file name (a lone surrogate): the
                blob = b""         # block misses (never cgsc's)
            if block and blob.count(b"\0") == count:   # (else a NUL in a spec or name,
                blocks.append((block, runs == 1))     # never cgsc's: misses)
                yield blob

    def _unusable(self, section: Section, pending) -> set:
        """The positions of the records that cannot hold whatever their files' stats:
        made later than now (the clock went back) or not made by cgsc, of a guest a
        build left pending, under a spec directory or with an input not as recorded.
        Each table entry is checked once, each record only when one fails (else the
        usual empty set, at C speed)."""
        bad: set = set()
        made = section.made
        if made and not (0 < min(made) and max(made) <= self.now):
            bad.update(j for j, when in enumerate(made) if not 0 < when <= self.now)
        if pending:
            bad.update(j for j, name in enumerate(section.name) if name in pending)
        for column, table, holds in ((section.dir, section.dirs, self._place_holds),
                                     (section.inputs, section.input_sets, self._inputs_hold)):
            good = {i for i, entry in enumerate(table) if holds(entry)}
            try:
                if set(column) <= good:   # (the usual case: a few distinct values)
                    continue
            except TypeError:   # (an unhashable value: not cgsc's)
                pass
            bad.update(j for j, i in enumerate(column) if type(i) is not int or i not in good)
        return bad

    def _place_holds(self, place) -> bool:
        """Whether a spec directory ([as named, real path, root]) is as recorded."""
        try:
            directory, _real, _root = place
            return type(directory) is str and self._place(directory) == list(place)
        except (TypeError, ValueError, OSError):
            return False

    def _place(self, directory: str) -> list:
        """[directory, its real path (with a separator after it), the spec root of the
        specs in it] as they are now ("" is the working directory)."""
        place = self._places.get(directory)
        if place is None:   # a fleet's specs share a few directories: resolved once
            real_dir = os.path.realpath(directory or os.curdir)
            prefix = real_dir if real_dir.endswith(os.sep) else real_dir + os.sep
            place = self._places[directory] = [directory, prefix, directory_root(real_dir)]
        return place

    def _inputs_hold(self, inputs) -> bool:
        """Whether each of a set of inputs ([[index, sha256], ...]) has the sha256 recorded."""
        try:
            return all(type(i) is int and i >= 0 and self._input(i) == sha for i, sha in inputs)
        except (TypeError, ValueError):
            return False

    def _template(self, encoded) -> Tuple[str, int]:
        """The stat entries (stats.batch) of a guest's directory and artifacts after its
        spec's path, "%" standing for its name, and how many files with the spec: the
        spec from the working directory, not followed and no symlink (cgsc does not
        record one: observe()), the guest directory not followed. ("", 0) for names
        cgsc would not record: their records never hold."""
        try:
            names = artifact_names(encoded, "%")
        except AttributeError:
            return "", 0
        if not all(plain(n.replace("%", "x")) for n in names):
            return "", 0
        return ("\0" + entry(NOFOLLOW, "%") + "".join(entry(0, f"%{os.sep}{n}") for n in names),
                2 + len(names))

    def summaries(self, specs: Sequence[str], suffix: str) -> list:
        """For each of `specs`, whose record valid_many() said holds: (name, diagnostics,
        skipped, machine, its artifacts' names, encoded), or None if it cannot be read
        (its claims: taken where it was validated)."""
        out, section = [], self.records(suffix)
        where, names, reports = section.where, section.name, section.report
        sets, files = section.artifact_sets, section.files
        for spec in specs:
            j = where[spec]
            report = reports[j]
            try:
                if type(report) is str:   # the usual report
                    out.append((names[j], (), (), report, sets[files[j]]))
                else:
                    out.append((names[j], *_report(names[j], report), sets[files[j]]))
            except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError,
                    RecursionError):   # (arrays nested deeper than _decode recurses)
                out.append(None)
        return out

    def _input(self, i: int) -> Optional[str]:
        """The sha256 of input i as it is now (None: gone, unreadable, moved elsewhere)."""
        if i in self._known:
            return self._known[i]
        found = None
        try:
            path, real, sha, dev, ino, size, mtime, ctime, made = self.inputs[i]
            if real is None or os.path.realpath(path) == real:
                st = os.stat(path)
                if (stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino, st.st_size,
                                                  st.st_mtime_ns, st.st_ctime_ns)
                        == (dev, ino, size, mtime, ctime)
                        and max(mtime, ctime) < made - MARGIN_NS and made <= self.now):
                    found = sha
                else:
                    found = self._hash_again(i, path, real)
        except (OSError, TypeError, ValueError, IndexError):
            found = None
        self._known[i] = found
        return found

    def _hash_again(self, i: int, path: str, real) -> Optional[str]:
        from ..core.filecache import Unreadable, open_regular, read_into
        started = time.time_ns()
        try:
            fd, st = open_regular(path, 1 << 30)
        except Unreadable:
            return None
        try:
            got = read_into(fd, st.st_size, False)
        finally:
            os.close(fd)
        if got.count != st.st_size:
            return None
        sha = got.state.hexdigest()
        self.inputs[i] = [path, real, sha, *FIELDS(st)[:5], started]
        self.dirty = True
        return sha

    # -- recording ----------------------------------------------------------------------
    def observe(self, spec: str, out, report: dict, names: Sequence[str],
                started: int) -> Optional[list]:
        """A record of a guest just compared and found up to date (`started`: the time
        before its compile; a boot file this invocation read earlier is recorded as of
        that read, whose bytes the guest measured), to be store()d by the process that
        saves the cache; None when it cannot be trusted later (a file changed within
        MARGIN of `started`) or not recorded exactly (another target than cgsc's, an
        unusual report, a spec path that is a symlink or names a directory: such a
        guest is compiled every time)."""
        if out.reads is None or any(t not in CACHEABLE_TARGETS for t, _a in out.artifacts):
            return None
        files, reals = out.reads.files, dict(out.reads.reals)
        if (not files or files[0][0] != spec or not all(plain(n) and "%" not in n for n in names)):
            return None
        summary = _summary(report)
        directory, tail = _split_spec(spec)
        if summary is None or tail in _DOTS or "\0" in spec:
            return None
        from ..core.filecache import current, stat_key
        read = current().entries   # boot files: read once, maybe long before `started`
        inputs = []
        try:
            for path, sha in files[1:]:
                st = os.stat(path)
                earlier = read.get(stat_key(st))
                made = started if earlier is None else min(started, earlier.since)
                inputs.append([path, reals.get(path), sha, *FIELDS(st)[:5], made])
            encoded = "/".join(n.replace(out.name, "%") for n in names)
            root = open_root(self.root)   # (its files stat'd as valid_many() stats them)
            try:
                template = self._template(encoded)[0].replace("%", out.name)
                keys, failed = stats.batch(root, f"{_SPEC}{spec}{template}".encode(
                    "utf-8", "surrogateescape"))
            finally:
                os.close(root)
            place = list(self._place(directory))
        except (OSError, ValueError, UnicodeError):
            return None
        if failed or max(max(m, c) for _d, _i, _s, m, c, _m in unpacked(keys)
                         ) >= started - MARGIN_NS:
            return None
        return [out.name, [keys, place], started, encoded, inputs, summary]

    def store(self, spec: str, requested: Sequence[str], strict: bool, observed: list) -> None:
        name, state, started, names, inputs, summary = observed
        recorded = []
        for one in inputs:
            i = self.index.get(one[0])
            if i is None:
                i = self.index[one[0]] = len(self.inputs)
                self.inputs.append(one)
            elif self.inputs[i][1:8] != one[1:8]:
                self.inputs[i] = one
            recorded.append([i, one[2]])
        self.records(self.suffix(requested, strict))[spec] = [name, state, started, names,
                                                              recorded, summary]
        self.dirty = True

    # -- writing ------------------------------------------------------------------------
    def save(self, exclusive: bool = False) -> None:
        """Write the cache if anything changed. Never fails a run: a cache that cannot be
        written (a read-only or full file system) is left as it was. `exclusive`: the
        output directory's lock is held exclusively (a build): leftovers of a writer that
        was killed are removed (even with nothing to write)."""
        if not self.dirty or self.key() is None:
            if exclusive:
                cache_file.sweep(self.root)
            return
        for suffix in list(self._raw):
            self.records(suffix)
        # Records of specs that are gone (deleted, renamed) are dropped, or a repository
        # with churn would grow its cache, and every run's load, without bound.
        inputs = _dumped({"inputs": self.inputs})
        lines, sections, offset = [inputs], [], len(inputs) + 1
        for suffix, records in sorted(self.guests.items()):
            directory = _directory(suffix)
            for spec in [spec for spec in records if not (os.path.isabs(spec) or directory)
                         or not os.path.lexists(os.path.join(directory, spec))]:
                del records[spec]
            if records:
                line = _dumped(suffix) + b"\t" + records.line()
                lines.append(line)
                sections.append([offset, len(line), cache_file.mac(self.secret, line)])
                offset += len(line) + 1
        body = b"\n".join(lines)
        fields = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                  "code": self.code_hint, "length": len(body), "sections": sections}
        fields["mac"] = cache_file.mac(self.secret, cache_file.signed(fields), inputs)
        header = json.dumps(fields, separators=(",", ":")).encode("ascii")
        try:
            cache_file.write(self.root, header + b"\n" + body, exclusive)
        except OSError:
            pass
        self.dirty = False


def load(root: str, host: Optional[dict]) -> Cache:
    """The cache of the output directory `root`: an empty one when there is none, or when
    the one there cannot be trusted (then it is replaced when the run saves)."""
    raw = cache_file.read(root)
    # (no cache file: no key to read, none made)
    secret = cache_file.secret(root, create=False) if raw is not None else None
    header, start = cache_file.verified(raw, secret)
    code, hint = code_digest(header.get("code") if header else None, MARGIN_NS)
    expected = fingerprint(code)
    doc = None
    if (header and header.get("format") == FORMAT and header.get("version") == VERSION
            and header.get("fingerprint") == expected):
        doc = _document(raw, start, header.get("sections"))
    return Cache(root, host, secret, hint, expected, doc, replace=raw is not None and doc is None)


def _document(raw: bytes, start: int, table) -> Optional[dict]:
    """{"inputs": [...], "sections": {suffix: (raw, where its records begin and end, where
    its line begins, its MAC)}} of a cache body (from `start` in `raw`: a line of JSON with
    the inputs, then a line for each section: the JSON of its suffix, a tab, the JSON of
    its records; JSON holds neither a tab nor a newline unescaped; `table`: each section's
    [offset in the body, length, MAC], from the header); None if it is no such thing."""
    first = raw.find(b"\n", start)
    first = len(raw) if first < 0 else first
    sections = {}
    try:
        head = json.loads(raw[start:first])
        if not isinstance(table, list):
            return None
        for offset, length, expected in table:
            line = start + offset
            end = line + length
            if type(offset) is not int or type(length) is not int or not (
                    first < line <= end <= len(raw)):
                return None
            tab = raw.find(b"\t", line, end)
            suffix = json.loads(raw[line:tab]) if tab >= 0 else None
            if not isinstance(suffix, str) or suffix in sections:
                return None
            sections[suffix] = (raw, tab + 1, end, line, expected)
    except (ValueError, TypeError, RecursionError):
        return None
    if not (isinstance(head, dict) and isinstance(head.get("inputs"), list)):
        return None
    return {"inputs": head["inputs"], "sections": sections}


def _directory(suffix: str) -> str:
    """The working directory of a suffix (Cache.suffix); "" when it was removed."""
    parts = suffix.split("\n", 4)
    return parts[4] if len(parts) == 5 else ""


def _dumped(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


VALIDATE_PARALLEL = 1000   # records from which every core stats a share


def valid_indexes(cache: Cache, items, suffix: str, pending, jobs: int = 1,
                  meanwhile=None) -> Tuple[List[int], Claims]:
    """(the indexes of `items` ((index, spec), ...) whose record (its key's `suffix`:
    Cache.suffix) holds, in order; their claims), checked in this process; for a large
    fleet (10,000 records are ~60,000 stat calls) `jobs - 1` helpers take stats as well
    (stats.spread) while this process first runs `meanwhile()` (what it will need for
    the guests that miss)."""
    claims = Claims()
    if cache.secret is None or not items:
        return [], claims
    try:
        cache._fd = open_root(cache.root)
    except OSError:
        return [], claims
    try:
        helpers = jobs - 1 if len(items) >= VALIDATE_PARALLEL else 0
        return cache.valid_many(items, suffix, pending, claims, helpers,
                                meanwhile if helpers else None), claims
    finally:
        os.close(cache._fd)
        cache._fd = None
