"""The incremental cache, OUT/.cgsc/cache.json: which guests `cgsc check` or `cgsc build`
found up to date, so that the next run compiles only the specs whose inputs changed.

A guest is recorded when its artifacts on disk were compared with what its spec builds
and found equal. Its record holds the stat (device, inode, size, mtime, ctime, mode) of
the spec, of the guest directory and of every artifact, the sha256 of every other file
the compile read (bases, measured boot files, ID keys), the spec's real path and root
(which the recorded paths follow from), and what the run reports for it (its warnings,
skipped targets, machine type, the hashes of its claims on its host). The guest is up to
date, and neither compiled nor compared, only while all of that holds:
- the spec, the guest directory and each artifact have the recorded stat, and none of
  their times is within MARGIN of the moment the record was made: a file written within
  one timestamp tick of its comparison can change again without changing either time (a
  same-size rewrite), so such a guest is compiled and compared again (git's racily
  clean entries), and only a later comparison makes it a record that is trusted;
- every other file read has the recorded sha256: proven by its stat under the same rule,
  else read and hashed again;
- the whole cache was written for this environment (cache_env.fingerprint()): cgsc's
  version and the content of its modules, schema and template files, Python and the
  dependencies' versions, the working directory (specs are keyed by the path given) and
  every CGSC_* environment variable; each record also for the same targets (-t),
  --strict and host profile.
Anything else is a miss: the guest is compiled and compared as without a cache. The file
and every record are keyed (BLAKE2b) with a secret in OUT/.cgsc/key (cache_file.py): a
cache that is truncated, corrupted, of another format or environment, written elsewhere
(committed to a repository, copied with the output directory) or forged, too large, or
not a regular file is ignored and replaced; without a usable key there is no cache.
Nothing outside the output directory is read or written for it. It is JSON, never code,
written whole and renamed into place under the output directory's lock: exclusive in a
build, shared in `check` (checks racing one another each write a complete cache; the
last rename wins). `--no-cache` neither reads nor writes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.diagnostics import Diagnostic
from . import cache_file
from .cache_env import code_digest, fingerprint
from .outdir import PRIVATE, plain

FORMAT = "cgsc-incremental-cache"
VERSION = 1
MARGIN_NS = 2_000_000_000   # timestamps this close to a record are not trusted: file
#                             systems with 1-2 s timestamps (FAT, ext3), clock steps


def _stat_tuple(st: os.stat_result) -> Tuple[int, int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


# -- records ----------------------------------------------------------------------------

CACHEABLE_TARGETS = ("shell", "systemd", "libvirt", "kubevirt", "reference-values")


_PACKERS: Dict[int, struct.Struct] = {}


def _state(spec: str, root_dir: str, name: str, files: Sequence[str],
           inputs: Sequence[Tuple[str, str]]):
    """(digest, newest time) of what a guest's record covers, as the files are now: the
    spec's real path, root and stat, the guest directory's and each artifact's stat, the
    path and sha256 of each other input (a record holds it keyed: _keyed). Raises OSError
    when one is missing. (It runs for every guest of every check: kept to its syscalls,
    a lstat of the spec and the guest directory, a stat of each artifact.)"""
    from ..spec.paths import real_path_stat, spec_root
    real, st = real_path_stat(spec)
    directory = f"{root_dir}{os.sep}{name}"
    stats = [st, os.lstat(directory)]
    for file in files:
        stats.append(os.stat(f"{directory}{os.sep}{file}"))
    values: list = []
    newest = 0
    for st in stats:
        mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
        values += (st.st_dev, st.st_ino, st.st_size, mtime, ctime, st.st_mode)
        if mtime > newest:
            newest = mtime
        if ctime > newest:
            newest = ctime
    packer = _PACKERS.get(len(stats))
    if packer is None:
        packer = _PACKERS[len(stats)] = struct.Struct("<" + "QQqqqI" * len(stats))
    # NUL never occurs in a path or name: it separates them
    text = "\0".join((real, spec_root(spec, real), name, *files,
                      *(f"{path}\0{sha}" for path, sha in inputs)))
    h = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=32)
    h.update(packer.pack(*values))
    return h.digest(), newest


def _keyed(secret: bytes, state: bytes) -> str:
    """A record's digest: its _state keyed with the cache's secret (no one without the key
    can make a record that holds)."""
    return base64.b64encode(hashlib.blake2b(state, digest_size=20, key=secret).digest()
                            ).decode("ascii")


def _names(encoded: str, name: str) -> List[str]:
    """A record's artifact names: "/"-separated, "%" standing for the guest's name (no
    artifact name has either: outdir.plain)."""
    return encoded.replace("%", name).split("/") if encoded else []


# A guest's report (fleet._report: the Result fields its compile gives) as JSON: values of
# these types only (anything else: the guest is not recorded); tuples as arrays; its claim
# hashes (conflicts.hashed: the same in every run) packed.
REPORT_FIELDS = ("name", "diagnostics", "skipped", "machine", "claims")


class _Unrecordable(Exception):
    pass


def _summary(report: dict):
    """A report as JSON: [machine type, claims] in the usual case (no warning, no target
    skipped), else every field (_encode); None when it cannot be recorded exactly."""
    if set(report) != set(REPORT_FIELDS) or not isinstance(report["name"], str):
        return None
    try:
        claims = _claims(report["claims"])
        if (not report["diagnostics"] and not report["skipped"]
                and isinstance(report["machine"], str)):
            return [report["machine"], claims]
        return {field: claims if field == "claims" else _encode(value)
                for field, value in report.items()}
    except _Unrecordable:
        return None


def _claims(claims) -> str:
    """(exclusive, shared) claim hashes as "<count of exclusive>:<base64 of int64s>"."""
    try:
        exclusive, shared = claims
        values = tuple(exclusive) + tuple(shared)
        return f"{len(exclusive)}:" + base64.b64encode(
            struct.pack(f"<{len(values)}q", *values)).decode("ascii")
    except (TypeError, ValueError, struct.error):
        raise _Unrecordable("claims") from None


def _unclaims(text: str) -> tuple:
    count, _sep, packed = text.partition(":")
    data = base64.b64decode(packed, validate=True)
    values = struct.unpack(f"<{len(data) // 8}q", data)
    split = int(count)
    if len(data) % 8 or not 0 <= split <= len(values):
        raise ValueError("not claims")
    return values[:split], values[split:]


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


def _report(name: str, summary) -> dict:
    """The report a record holds."""
    if type(summary) is list and len(summary) == 2 and type(summary[0]) is str:
        return {"name": name, "diagnostics": (), "skipped": (), "machine": summary[0],
                "claims": _unclaims(summary[1])}
    if type(summary) is not dict or set(summary) != set(REPORT_FIELDS):
        raise ValueError("not a report")
    report = {field: _unclaims(value) if field == "claims" else _decode(value)
              for field, value in summary.items()}
    if report["name"] != name or not all(type(d) is Diagnostic for d in report["diagnostics"]):
        raise ValueError("not a report")
    return report


class Cache:
    """One invocation's view of OUT/.cgsc/cache.json (load()); forked workers inherit it."""

    def __init__(self, root: str, host: Optional[dict], secret: Optional[bytes],
                 code_hint: Optional[dict] = None, fingerprint_: str = "",
                 doc: Optional[dict] = None, replace: bool = False):
        self.root, self.secret = root, secret   # the key (None: not read yet, or none)
        self.host = "" if host is None else hashlib.sha256(
            json.dumps(host, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()
        self.code_hint, self.fingerprint = code_hint, fingerprint_
        self.inputs: List[list] = list(doc["inputs"]) if doc else []
        self.guests: Dict[str, list] = dict(doc["guests"]) if doc else {}
        self.index = {e[0]: i for i, e in enumerate(self.inputs)
                      if isinstance(e, list) and e and isinstance(e[0], str)}
        self.now = time.time_ns()
        self.dirty = replace   # a cache there that is not trusted: replaced even if empty
        self.refreshed: Dict[int, list] = {}   # inputs hashed again in this process
        self.unkeyed: Dict[str, bytes] = {}    # records stored, their state keyed on save
        self._known: Dict[int, Optional[str]] = {}

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
        """What a record's key holds besides its spec: the targets asked for (-t), --strict
        and the host profile."""
        return "\n" + ",".join(requested) + ("\nstrict\n" if strict else "\n") + self.host

    # -- validation ---------------------------------------------------------------------
    def valid(self, spec: str, suffix: str, pending=()) -> bool:
        """Whether the record of `spec` (the key's `suffix`: targets and host) still holds."""
        record = self.guests.get(spec + suffix)
        if record is None or self.secret is None:
            return False
        try:
            name, digest, made, names, inputs, _summary = record
            if not plain(name) or name in pending or not 0 < made <= self.now:
                return False
            pairs = []
            for i in inputs:
                sha = self._input(i)
                if sha is None:
                    return False
                pairs.append((self.inputs[i][0], sha))
            state, newest = _state(spec, self.root, name, _names(names, name), pairs)
            return newest < made - MARGIN_NS and _keyed(self.secret, state) == digest
        except (OSError, TypeError, ValueError, IndexError, AttributeError, struct.error,
                UnicodeError):
            return False

    def summary(self, spec: str, suffix: str):
        """(the report, a function giving its artifacts' names) of a record valid() said
        holds; None if it cannot be read."""
        try:
            name, _digest, _made, names, _inputs, summary = self.guests[spec + suffix]
            return _report(name, summary), lambda: _names(names, name)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            return None

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
        self.refreshed[i] = [path, real, sha, *_stat_tuple(st)[:5], started]
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
                inputs.append([path, reals.get(path), sha, *_stat_tuple(st)[:5], made])
            state, newest = _state(spec, self.root, out.name, list(names),
                                   [(e[0], e[2]) for e in inputs])
        except (OSError, struct.error):
            return None
        if newest >= started - MARGIN_NS:
            return None
        return [out.name, state, started, "/".join(n.replace(out.name, "%") for n in names),
                inputs, summary]   # the state is keyed when the cache is saved

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
        key = spec + self.suffix(requested, strict)
        self.guests[key] = [name, "", started, names, indexes, summary]
        self.unkeyed[key] = state
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
        for key, state in self.unkeyed.items():
            self.guests[key][1] = _keyed(self.secret, state)
        self.unkeyed.clear()
        # Records of specs that are gone (deleted, renamed) are dropped, or a repository
        # with churn would grow its cache, and every run's load, without bound. (A key is
        # the spec's path as given, then "\n": a path with a newline is merely a miss.)
        for key in [k for k in self.guests if not os.path.lexists(k.partition("\n")[0])]:
            del self.guests[key]
        body = json.dumps({"inputs": self.inputs, "guests": self.guests},
                          separators=(",", ":")).encode("ascii")
        fields = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                  "code": self.code_hint, "length": len(body)}
        fields["mac"] = cache_file.mac(self.secret, cache_file.signed(fields, body))
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
    header, body = cache_file.verified(raw, secret)
    code, hint = code_digest(header.get("code") if header else None, MARGIN_NS)
    expected = fingerprint(code)
    doc = None
    if (header and header.get("format") == FORMAT and header.get("version") == VERSION
            and header.get("fingerprint") == expected):
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and isinstance(doc.get("inputs"), list)
                and isinstance(doc.get("guests"), dict)):
            doc = None
    return Cache(root, host, secret, hint, expected, doc, replace=raw is not None and doc is None)


VALIDATE_PARALLEL = 1000   # records from which every core checks a share (each: a few stats)
_BLOCK = 256               # records per unit of work handed out


def valid_indexes(cache: Cache, items, suffix: str, pending, jobs: int = 1,
                  child_init=None) -> List[int]:
    """The indexes of `items` ((index, spec), ...) whose record (its key's `suffix`:
    Cache.suffix) holds, in order: checked in this process, or for a large fleet by
    forked workers as well (10,000 records: 188 ms in one process, 105 ms in two, on a
    2-core VM); inputs a worker hashed again come back to this process's cache."""
    if jobs <= 1 or len(items) < VALIDATE_PARALLEL or not hasattr(os, "fork"):
        return [i for i, spec in items if cache.valid(spec, suffix, pending)]
    from .workers import WorkerDied, ordered_map
    blocks = [items[k:k + _BLOCK] for k in range(0, len(items), _BLOCK)]

    def check(chunk):
        found = [i for block in chunk for i, spec in block if cache.valid(spec, suffix, pending)]
        refreshed, cache.refreshed = cache.refreshed, {}
        return found, refreshed
    out: List[int] = []
    try:
        for found, refreshed in ordered_map(check, blocks, jobs, child_init):
            out += found
            cache.merge(refreshed)
    except WorkerDied:   # checking is read-only: do it all here instead
        return [i for i, spec in items if cache.valid(spec, suffix, pending)]
    return out
