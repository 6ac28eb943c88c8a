"""The incremental cache, OUT/.cgsc/cache.json: which guests `cgsc check` or `cgsc build`
found up to date, so that the next run compiles only the specs whose inputs changed.

A guest is recorded when its artifacts on disk were compared with what its spec builds
and found equal. Its record holds the stat (device, inode, size, mtime, ctime, mode) of
the spec, of the guest directory and of every artifact, the sha256 of every other file
the compile read (bases, measured boot files, ID keys), the spec's real path and root
(which the recorded paths follow from), and what the run reports for it (its warnings,
skipped targets, machine type, the hashes of its claims on its host). The guest is up to
date, and neither compiled nor compared, only while all of that holds:
- the spec, the guest directory and each artifact have the recorded stat. A guest is
  recorded only when none of those times is within MARGIN of the comparison: a file
  written within one timestamp tick of its comparison can change again without changing
  either time (a same-size rewrite), so such a guest is compiled and compared again
  (git's racily clean entries), and only a later comparison records it. (A record's
  stat is compared for equality, so its times stay that old: the rule needs no second
  look when the record is read.);
- every other file read has the recorded sha256: proven by its stat under the same rule,
  else read and hashed again;
- the whole cache was written for this environment (cache_env.fingerprint()): cgsc's
  version and the content of its modules, schema and template files, Python and the
  dependencies' versions and every CGSC_* environment variable; each record also for
  the same targets (-t), --strict, host profile and working directory (specs are keyed
  by the path given).
Anything else is a miss: the guest is compiled and compared as without a cache. The
file's header with its inputs, each of its sections and every record are keyed (BLAKE2b)
with a secret in OUT/.cgsc/key (cache_file.py): a cache that is truncated, corrupted, of
another format or environment, written elsewhere (committed to a repository, copied with
the output directory) or forged, too large, or not a regular file is ignored and
replaced, and so is a section that fails its MAC when a run reads it (a run checks only
its own section: the others are megabytes it does not need); without a usable key there
is no cache.
Nothing outside the output directory is read or written for it. It is JSON, never code:
a header (with the table of sections: where each is and its MAC), a line of the inputs,
then a line for each suffix (the targets, --strict, host and working directory of the
runs that wrote it) with its records, checked and parsed only by a run with that suffix (`check` and `check --all`, a hook run in a subdirectory and CI at the top,
keep theirs apart). It is written whole and renamed into place under
the output directory's lock: exclusive in a build, shared in `check` (checks racing one
another each write a complete cache; the last rename wins). `--no-cache` neither reads
nor writes it.

Reading it is most of what a run of a large unchanged fleet does: ~60,000 stat calls for
10,000 guests. valid_indexes() shares them among every core (workers.pulled), while this
process loads what the guests that miss will need; the workers send back the indexes of
the guests that hold and their claim hashes (Claims), not a report each.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from array import array
from itertools import chain, repeat
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.diagnostics import Diagnostic
from ..spec.paths import spec_root
from . import cache_file
from .cache_env import code_digest, cwd, fingerprint
from .outdir import PRIVATE, open_root, plain
from .stats import FIELDS, KEY, mode, packed, unpacked

FORMAT = "cgsc-incremental-cache"
VERSION = 3
MARGIN_NS = 2_000_000_000   # timestamps this close to a record are not trusted: file
#                             systems with 1-2 s timestamps (FAT, ext3), clock steps


# -- records ----------------------------------------------------------------------------

CACHEABLE_TARGETS = ("shell", "systemd", "libvirt", "kubevirt", "reference-values")


DIGEST_SIZE = 20


def _keyed(secret: bytes, state: bytes) -> str:
    """A record's digest: its state (Cache._state) keyed with the cache's secret (no one
    without the key can make a record that holds)."""
    return hashlib.blake2b(state, digest_size=DIGEST_SIZE, key=secret).hexdigest()


def _inputs(pairs) -> str:
    """The (path, sha256) of a record's other inputs as its state holds them (NUL never
    occurs in a path: it separates them)."""
    return "\0".join(f"{path}\0{sha}" for path, sha in pairs)


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
    machine's): hex, so that the claims of a block of records are decoded in one call
    (Claims.add)."""
    try:
        exclusive, shared = claims
        return [array("q", exclusive).tobytes().hex(), array("q", shared).tobytes().hex()]
    except (TypeError, ValueError, OverflowError):
        raise _Unrecordable("claims") from None


def _unclaims(exclusive, shared) -> tuple:
    """_claims' value back, as two arrays (ValueError or TypeError for anything else: the
    record is then a miss)."""
    out = []
    for text in (exclusive, shared):
        if not _hex(text):
            raise ValueError("not claims")
        values = array("q")
        values.frombytes(bytes.fromhex(text))
        out.append(values)
    return tuple(out)


def _hex(text) -> bool:
    """Whether `text` can be the hex of 64-bit integers (bytes.fromhex() says the rest)."""
    return (type(text) is str and not len(text) & 15 and text.isascii()
            and (not text or text.isalnum()))


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


def _usual(summary) -> bool:
    """A report of the usual form (_summary): [machine type, claims...]."""
    return type(summary) is list and len(summary) == 3 and type(summary[0]) is str


def _report(name: str, summary) -> tuple:
    """(diagnostics, skipped, machine, claims) of the report a record holds."""
    if _usual(summary):
        return (), (), summary[0], _unclaims(summary[1], summary[2])
    if type(summary) is not dict or set(summary) != set(REPORT_FIELDS):
        raise ValueError("not a report")
    claims = summary["claims"]
    if type(claims) is not list or len(claims) != 2:
        raise ValueError("not claims")
    report = {field: _decode(value) for field, value in summary.items() if field != "claims"}
    diagnostics, skipped = report["diagnostics"], report["skipped"]
    if (report["name"] != name or type(report["machine"]) is not str
            or type(diagnostics) is not tuple or type(skipped) is not tuple
            or not all(type(d) is Diagnostic for d in diagnostics)
            or not all(type(why) is tuple for why in skipped)):
        raise ValueError("not a report")   # (each field of the type fleet.Result gives it)
    for why in skipped:   # (target, rule, reason)
        _strings(why, 3)
    return diagnostics, skipped, report["machine"], _unclaims(*claims)


class Claims:
    """The claim hashes of the guests taken from the cache, as conflicts.Registry holds
    them (hash arrays and their owners' indexes), gathered where the records are checked
    (a worker sends four byte strings, not a tuple a guest). The usual records' hex is
    decoded a block at a time (done()): one call, not one a guest."""

    def __init__(self) -> None:
        self.exclusive, self.exclusive_owner = array("q"), array("q")
        self.shared, self.shared_owner = array("q"), array("q")
        self._owners: List[int] = []
        self._exclusive: List[str] = []
        self._shared: List[str] = []

    def add(self, index: int, name: str, summary) -> bool:
        """Take the claims of guest `index` from its record's summary; False when that
        cannot be read (the guest is then compiled)."""
        if type(summary) is list and len(summary) == 3:   # _usual(): kept to its checks
            exclusive, shared = summary[1], summary[2]
            if (type(summary[0]) is str and type(exclusive) is str and type(shared) is str
                    and not (len(exclusive) | len(shared)) & 15):   # (hex: done())
                self._owners.append(index)
                self._exclusive.append(exclusive)
                self._shared.append(shared)
                return True
        try:
            _diagnostics, _skipped, _machine, (exclusive, shared) = _report(name, summary)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError):
            return False
        self._extend(index, exclusive, shared)
        return True

    def done(self) -> List[int]:
        """Decode what add() took; the indexes of guests whose claims turn out not to be
        hex after all (their records are then misses)."""
        owners, exclusive, shared = self._owners, self._exclusive, self._shared
        self._owners, self._exclusive, self._shared = [], [], []
        try:
            texts = ["".join(exclusive), "".join(shared)]
            decoded = [bytes.fromhex(text) for text in texts]
            if any(2 * len(data) != len(text) for data, text in zip(decoded, texts)):
                raise ValueError("whitespace")   # (fromhex skips it)
        except ValueError:   # one of them (never written so by cgsc): found one at a time
            bad = []
            for index, parts in zip(owners, zip(exclusive, shared)):
                try:
                    self._extend(index, *_unclaims(*parts))
                except ValueError:
                    bad.append(index)
            return bad
        for values, owner, data, texts in ((self.exclusive, self.exclusive_owner, decoded[0],
                                            exclusive),
                                           (self.shared, self.shared_owner, decoded[1], shared)):
            values.frombytes(data)
            owner.extend(chain.from_iterable(map(repeat, owners,
                                                 [len(text) >> 4 for text in texts])))
        return []

    def _extend(self, index: int, exclusive, shared) -> None:
        self.exclusive += exclusive
        self.exclusive_owner += array("q", (index,)) * len(exclusive)
        self.shared += shared
        self.shared_owner += array("q", (index,)) * len(shared)

    def packed(self) -> Tuple[bytes, bytes, bytes, bytes]:
        return (self.exclusive.tobytes(), self.exclusive_owner.tobytes(),
                self.shared.tobytes(), self.shared_owner.tobytes())

    def merge(self, packed: Tuple[bytes, bytes, bytes, bytes]) -> None:
        for target, data in zip((self.exclusive, self.exclusive_owner, self.shared,
                                 self.shared_owner), packed):
            target.frombytes(data)


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
        self.guests: Dict[str, Dict[str, list]] = {}
        self._raw: Dict[str, tuple] = dict(doc["sections"]) if doc else {}
        self.index = {e[0]: i for i, e in enumerate(self.inputs)
                      if isinstance(e, list) and e and isinstance(e[0], str)}
        self.now = time.time_ns()
        self.dirty = replace   # a cache there that is not trusted: replaced even if empty
        self.refreshed: Dict[int, list] = {}   # inputs hashed again in this process
        self.unkeyed: Dict[tuple, bytes] = {}  # records stored, their state keyed on save
        self._known: Dict[int, Optional[str]] = {}
        self._texts: Dict[tuple, Optional[str]] = {}          # inputs of a record, as text
        self._places: Dict[str, Tuple[str, str]] = {}         # spec directory: real, root
        self._paths: Dict[str, str] = {}                      # artifact names: their paths
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
        return "\n".join(("", ",".join(requested), "strict" if strict else "", self.host,
                          self.cwd))

    def records(self, suffix: str) -> Dict[str, list]:
        """spec -> record of the runs with this suffix (parsed now if not yet: a cache
        holds a section for each set of targets it was used with, check --all's among
        them, and a run reads only its own)."""
        records = self.guests.get(suffix)
        if records is None:
            records = self.guests[suffix] = {}
            if suffix in self._raw:
                raw, begin, end, line, expected = self._raw.pop(suffix)
                if cache_file.intact(self.secret, expected, memoryview(raw)[line:end]):
                    records.update(_parsed(raw[begin:end]))
                else:   # damaged or planted: none of it is trusted, and it is replaced
                    self.dirty = True
        return records

    # -- validation ---------------------------------------------------------------------
    def valid_many(self, items, suffix: str, pending=(), claims: Optional["Claims"] = None
                   ) -> List[int]:
        """The indexes of `items` ((index, spec), ...) whose record still holds: its spec,
        guest directory and artifacts have the recorded stat, every other input the
        recorded sha256; the claims of each go to `claims`. The record's time rule needs
        no check here: a record is made only when all those times are older than MARGIN
        (observe()), and equal stats are equal times. (Kept to its syscalls: it runs for
        every guest of every run.)"""
        if self.secret is None:
            return []
        guests, now, found, state = self.records(suffix), self.now, [], self._state
        keyed = hashlib.blake2b(digest_size=DIGEST_SIZE, key=self.secret)   # copied: cheaper
        for index, spec in items:
            record = guests.get(spec)
            if record is None:
                continue
            try:
                name, digest, made, names, inputs, summary = record
                if not 0 < made <= now or name in pending:   # (the name: in the keyed state)
                    continue
                text = self._inputs_text(tuple(inputs)) if inputs else ""
                if text is None:
                    continue
                h = keyed.copy()
                h.update(state(spec, name, names, text)[0])
                if h.hexdigest() == digest and (claims is None
                                                or claims.add(index, name, summary)):
                    found.append(index)
            except (OSError, TypeError, ValueError, IndexError, AttributeError,
                    UnicodeError, OverflowError):
                pass
        if claims is not None:
            bad = set(claims.done())
            if bad:
                found = [index for index in found if index not in bad]
        return found

    def _inputs_text(self, inputs: tuple) -> Optional[str]:
        """The path and sha256 of each input of a record, as they are now (None: one is
        gone or moved)."""
        text = self._texts.get(inputs, False)
        if text is False:
            pairs = []
            for i in inputs:
                sha = self._input(i)
                if sha is None:
                    break
                pairs.append((self.inputs[i][0], sha))
            text = self._texts[inputs] = None if len(pairs) < len(inputs) else _inputs(pairs)
        return text

    def _state(self, spec: str, name: str, names: str, text: str):
        """(state, keys) of what a guest's record covers, as the files are now: the spec's
        real path, root and stat, the guest directory's and the stat of each artifact
        (`names`: their names, encoded: artifact_names()), `text` (its other inputs:
        _inputs_text); `keys`: those stats, packed (stats.py). Raises OSError when one is
        missing. (Kept to one call for the stats: it runs for every guest of every run.)"""
        paths = self._paths.get(names)
        if paths is None:   # "%.sh/manifest.json" -> "\0%/%.sh\0%/manifest.json"
            paths = self._paths[names] = "".join(f"\0%{os.sep}{n}" for n in names.split("/")
                                                 ) if names else ""
        relative = (name + paths.replace("%", name)).split("\0")   # the directory, artifacts
        if self._fd is None:   # (else relative to the output directory: shorter lookups)
            relative = [f"{self.root}{os.sep}{path}" for path in relative]
        # the spec from the working directory and the guest directory not followed
        keys = packed(self._fd, (spec, *relative), 2, 1)
        head, sep, tail = spec.rpartition(os.sep)
        if tail not in ("", os.curdir, os.pardir) and not stat.S_ISLNK(mode(keys)):
            directory = head or sep   # ("/x": "/"; "x": "", the working directory)
            place = self._places.get(directory)
            if place is None:   # a fleet's specs share a few directories: resolved once
                real_dir = os.path.realpath(directory or os.curdir)
                prefix = real_dir if real_dir.endswith(os.sep) else real_dir + os.sep
                place = self._places[directory] = (prefix, spec_root(prefix + tail,
                                                                     prefix + tail))
            real, root = place[0] + tail, place[1]
        else:   # the spec is a symlink, or names a directory: the slow way
            real = os.path.realpath(spec)
            keys, root = packed(None, (spec,), 0) + keys[KEY.size:], spec_root(spec, real)
        # NUL never occurs in a path or name: it separates them
        head_text = "\0".join((real, root, name, names, text)).encode("utf-8", "surrogateescape")
        return head_text + b"\0" + keys, keys

    def summaries(self, specs: Sequence[str], suffix: str) -> list:
        """For each of `specs`, whose record valid_many() said holds: (name, diagnostics,
        skipped, machine, a function giving its artifacts' names), or None if it cannot
        be read (its claims: Claims.add)."""
        out, guests = [], self.records(suffix)
        for spec in specs:
            try:
                name, _digest, _made, names, _inputs, summary = guests[spec]
                if _usual(summary):   # (its claims: read where it was validated)
                    out.append((name, (), (), summary[0], names))
                else:
                    diagnostics, skipped, machine, _claims = _report(name, summary)
                    out.append((name, diagnostics, skipped, machine, names))
            except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError):
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
        self.refreshed[i] = [path, real, sha, *FIELDS(st)[:5], started]
        self.inputs[i] = self.refreshed[i]
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
        unusual report)."""
        if out.reads is None or any(t not in CACHEABLE_TARGETS for t, _a in out.artifacts):
            return None
        files, reals = out.reads.files, dict(out.reads.reals)
        if (not files or files[0][0] != spec or not all(plain(n) and "%" not in n for n in names)):
            return None
        summary = _summary(report)
        if summary is None:
            return None
        from ..core.filecache import current, stat_key
        read = current().entries   # boot files: read once, maybe long before `started`
        inputs = []
        try:
            for path, sha in files[1:]:
                st = os.stat(path)
                entry = read.get(stat_key(st))
                made = started if entry is None else min(started, entry.since)
                inputs.append([path, reals.get(path), sha, *FIELDS(st)[:5], made])
            text = _inputs((e[0], e[2]) for e in inputs)
            encoded = "/".join(n.replace(out.name, "%") for n in names)
            state, keys = self._state(spec, out.name, encoded, text)
        except (OSError, OverflowError):
            return None
        if max(max(m, c) for _d, _i, _s, m, c, _m in unpacked(keys)) >= started - MARGIN_NS:
            return None
        return [out.name, state, started, encoded, inputs, summary]   # keyed on save

    def store(self, spec: str, requested: Sequence[str], strict: bool, observed: list) -> None:
        name, state, started, names, inputs, summary = observed
        indexes = []
        for entry in inputs:
            i = self.index.get(entry[0])
            if i is None:
                i = self.index[entry[0]] = len(self.inputs)
                self.inputs.append(entry)
            elif self.inputs[i][1:8] != entry[1:8]:
                self.inputs[i] = entry
            indexes.append(i)
        suffix = self.suffix(requested, strict)
        self.records(suffix)[spec] = [name, "", started, names, indexes, summary]
        self.unkeyed[(suffix, spec)] = state
        self.dirty = True

    def merge(self, refreshed: Dict[int, list]) -> None:
        """Inputs a worker hashed again."""
        for i, entry in refreshed.items():
            self.inputs[i] = entry
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
        for (suffix, spec), state in self.unkeyed.items():
            self.guests[suffix][spec][1] = _keyed(self.secret, state)
        self.unkeyed.clear()
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
                line = _dumped(suffix) + b"\t" + _dumped(records)
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


def _parsed(records: bytes) -> Dict[str, list]:
    """A section's records (written by this user's cgsc: the file's MAC holds); an empty
    section if they are no object."""
    import gc
    collecting = gc.isenabled()
    gc.disable()   # ~100,000 containers for 10,000 guests, none in a cycle: the passes
    try:           # they would set off cost as much as the parse
        parsed = json.loads(records)
    except (ValueError, RecursionError):
        parsed = None
    finally:
        if collecting:
            gc.enable()
    return parsed if isinstance(parsed, dict) else {}


def _directory(suffix: str) -> str:
    """The working directory of a suffix (Cache.suffix); "" when it was removed."""
    parts = suffix.split("\n", 4)
    return parts[4] if len(parts) == 5 else ""


def _dumped(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


VALIDATE_PARALLEL = 1000   # records from which every core checks a share (each: a few stats)
_BLOCK = 256               # records per unit of work handed out


def valid_indexes(cache: Cache, items, suffix: str, pending, jobs: int = 1,
                  child_init=None, meanwhile=None) -> Tuple[List[int], Claims]:
    """(the indexes of `items` ((index, spec), ...) whose record (its key's `suffix`:
    Cache.suffix) holds, in order; their claims): checked in this process, or for a large
    fleet by forked workers as well, while this process first runs `meanwhile()` (what it
    will need for the guests that miss: 10,000 records are ~60,000 stat calls); inputs a
    worker hashed again come back to this process's cache. The section of records is
    parsed where it is first used, after the fork: a worker parses it while this process
    runs `meanwhile()`, not before either can start (the parse is ~10 ms for 10,000)."""
    claims = Claims()
    if cache.secret is None or not items:
        return [], claims
    try:
        cache._fd = open_root(cache.root)
    except OSError:
        return [], claims
    try:
        if jobs <= 1 or len(items) < VALIDATE_PARALLEL or not hasattr(os, "fork"):
            return cache.valid_many(items, suffix, pending, claims), claims
        from .workers import WorkerDied, blocks, pulled

        def check(block):
            mine = Claims()
            found = cache.valid_many(block, suffix, pending, mine)
            refreshed, cache.refreshed = cache.refreshed, {}
            return found, refreshed, mine.packed()
        out: List[int] = []
        try:
            for found, refreshed, packed in pulled(check, blocks(items, _BLOCK), jobs, child_init,
                                                   meanwhile or (lambda: None)):
                out += found
                cache.merge(refreshed)
                claims.merge(packed)
        except WorkerDied:   # checking is read-only: do it all here instead
            claims = Claims()
            return cache.valid_many(items, suffix, pending, claims), claims
        return out, claims
    finally:
        os.close(cache._fd)
        cache._fd = None
