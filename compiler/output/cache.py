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
- the whole cache was written for this environment (fingerprint()): cgsc's version and
  the content of its modules, schema and template files, Python and the dependencies'
  versions, the working directory (specs are keyed by the path given) and every CGSC_*
  environment variable; each record also for the same targets (-t), --strict and host
  profile.
Anything else is a miss: the guest is compiled and compared as without a cache. The file
and every record are keyed (BLAKE2b) with a secret in OUT/.cgsc/key, readable by this
user only and bound to that file's identity: a cache that is truncated, corrupted, of
another format or environment, written elsewhere (committed to a repository, copied
with the output directory) or forged, too large, or not a regular file is ignored and
replaced; without a usable key there is no cache. Nothing outside the output directory
is read or written for it. It is JSON, never code, and is written whole and renamed into
place (a unique temporary first, signals held), under
the output directory's lock: exclusive in a build, shared in `check` (checks racing one
another each write a complete cache; the last rename wins). `--no-cache` neither reads
nor writes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..core.diagnostics import Diagnostic
from .outdir import PRIVATE, plain

FILE = "cache.json"
FORMAT = "cgsc-incremental-cache"
VERSION = 1
MARGIN_NS = 2_000_000_000   # timestamps this close to a record are not trusted: file
#                             systems with 1-2 s timestamps (FAT, ext3), clock steps
MAX_BYTES = 256 << 20       # a larger file is no cache cgsc wrote
_TEMPORARY = f"{FILE}."      # + pid, random, ".tmp"
IGNORE = "# cgsc's private cache: never commit or deploy it\n*\n"
_STAT = struct.Struct("<QQqqqI")   # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns, st_mode
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Dependencies whose version can change what cgsc writes: (distribution, module).
DEPENDENCIES = (("tomli", "tomli"), ("jsonschema", "jsonschema"), ("Jinja2", "jinja2"),
                ("PyYAML", "yaml"), ("sev-snp-measure", "sevsnpmeasure"),
                ("cryptography", "cryptography"))
CODE_SUFFIXES = (".py", ".json", ".j2")


# -- the environment ------------------------------------------------------------------

def fingerprint(code: str) -> str:
    """What every record depends on besides its own files (`code`: code_digest())."""
    from .. import __version__
    parts = {
        "cgsc": __version__, "code": code, "python": sys.version,
        "dependencies": _dependencies(), "cwd": os.getcwd(),
        "environment": sorted((k, v) for k, v in os.environ.items() if k.startswith("CGSC_")),
        "encoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors(),
                     sys.flags.utf8_mode],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8", "surrogateescape")
                          ).hexdigest()


def _dependencies() -> List[Tuple[str, str]]:
    from importlib.util import find_spec

    from ..core.installed import version
    out = []
    for distribution, module in DEPENDENCIES:
        try:
            found = find_spec(module)
            out.append((distribution, version(distribution, found.origin) if found and
                        found.origin else "absent"))
        except Exception:   # not installed, or no metadata: a value of its own
            out.append((distribution, "unknown"))
    return out


def code_files() -> Dict[str, str]:
    """relative name -> path of every module, schema and template file of the installed
    cgsc (the cgsc, cgsc.schema and cgsc.targets packages, wherever each lives)."""
    import importlib
    tops = {}
    for package in ("cgsc", "cgsc.schema", "cgsc.targets"):   # (each is loaded for a run)
        for location in importlib.import_module(package).__path__:
            tops[os.path.realpath(location)] = package
    out = {}
    for top, package in sorted(tops.items()):
        for here, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(CODE_SUFFIXES):
                    path = os.path.join(here, name)
                    out[os.path.join(package, os.path.relpath(path, top))] = path
    return out


def code_digest(hint: Optional[dict]) -> Tuple[str, dict]:
    """(sha256 of cgsc's code files, a hint for next time: their stat and that sha256).
    The files are hashed unless each has the stat of `hint` (a previous cache's), with
    times older than MARGIN before the hint was made."""
    files = code_files()
    now = time.time_ns()
    stats = {}
    for name, path in files.items():
        try:
            stats[name] = list(_stat_tuple(os.stat(path)))
        except OSError:
            stats[name] = None
    try:
        if (isinstance(hint, dict) and hint.get("files") == stats and hint.get("names") == list(files)
                and all(max(s[3], s[4]) < hint["made"] - MARGIN_NS for s in stats.values())
                and isinstance(hint.get("sha256"), str)):
            return hint["sha256"], hint
    except (TypeError, KeyError, IndexError):
        pass
    digest = hashlib.sha256()
    for name, path in files.items():
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            data = b"\0unreadable"
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    sha = digest.hexdigest()
    return sha, {"names": list(files), "files": stats, "made": now, "sha256": sha}


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
        if not report["diagnostics"] and not report["skipped"] and isinstance(report["machine"], str):
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
        never makes one."""
        if self.secret is None:
            try:   # the private directory first (a check may be the first to write there)
                os.mkdir(os.path.join(self.root, PRIVATE), 0o700)
            except OSError:
                pass
            self.secret = _secret(self.root, create=True)
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
        before its compile), to be store()d by the process that saves the cache; None
        when it cannot be trusted later (a file changed within MARGIN of `started`) or
        not recorded exactly (another target than cgsc's, an unusual report)."""
        if out.reads is None or any(t not in CACHEABLE_TARGETS for t, _a in out.artifacts):
            return None
        files, reals = out.reads.files, dict(out.reads.reals)
        if (not files or files[0][0] != spec or not all(plain(n) and "%" not in n for n in names)):
            return None
        summary = _summary(report)
        if summary is None:
            return None
        inputs = []
        try:
            for path, sha in files[1:]:
                st = os.stat(path)
                inputs.append([path, reals.get(path), sha, *_stat_tuple(st)[:5], started])
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
        was killed are removed."""
        if not self.dirty or self.key() is None:
            return
        for key, state in self.unkeyed.items():
            self.guests[key][1] = _keyed(self.secret, state)
        self.unkeyed.clear()
        body = json.dumps({"inputs": self.inputs, "guests": self.guests},
                          separators=(",", ":")).encode("ascii")
        fields = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                  "code": self.code_hint, "length": len(body)}
        fields["mac"] = _mac(self.secret, _signed(fields, body))
        header = json.dumps(fields, separators=(",", ":")).encode("ascii")
        try:
            _write(self.root, header + b"\n" + body, exclusive)
        except OSError:
            pass
        self.dirty = False


def load(root: str, host: Optional[dict]) -> Cache:
    """The cache of the output directory `root`: an empty one when there is none, or when
    the one there cannot be trusted (then it is replaced when the run saves)."""
    raw = _read(root)
    secret = _secret(root, create=False) if raw is not None else None   # none: nothing to trust
    header, body = _verified(raw, secret)
    code, hint = code_digest(header.get("code") if header else None)
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


def _verified(raw: Optional[bytes], secret: Optional[bytes]) -> Tuple[Optional[dict], bytes]:
    """(header, body) of a cache file whose MAC (over the header's other fields and the
    body) is this user's; (None, b"") for any other bytes."""
    if raw is None or secret is None:
        return None, b""
    head, _sep, body = raw.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        return None, b""
    if not isinstance(header, dict) or header.get("length") != len(body):
        return None, b""
    mac = header.pop("mac", None)
    if mac != _mac(secret, _signed(header, body)):
        return None, b""
    return header, body


def _signed(header: dict, body: bytes) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n" + body


def _mac(secret: bytes, body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=32, key=secret).hexdigest()


KEY = "key"
KEY_SIZE = 32


def _secret(root: str, create: bool = True) -> Optional[bytes]:
    """The cache's key: 32 random bytes in OUT/.cgsc/key, a file of this user that no one
    else can read or write, made on first use (`create`), bound to that file's identity
    (device, inode, change time): a copy of it (committed to a repository with the cache,
    or copied with the output directory) is another key, so a cache from anywhere else
    is never trusted. None when there is none to be had (no cache then)."""
    try:
        private = os.open(os.path.join(root, PRIVATE), _DIR)
    except OSError:
        return None
    try:
        for _attempt in range(2):
            try:
                fd = os.open(KEY, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=private)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    fd = os.open(KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=private)
                except FileExistsError:   # another cgsc made it first: read that one
                    continue
                try:
                    os.write(fd, os.urandom(KEY_SIZE))   # one write of 32 bytes is whole
                finally:
                    os.close(fd)
                continue
            try:
                st = os.fstat(fd)
                if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                        or st.st_mode & 0o077 or st.st_size != KEY_SIZE):
                    return None
                data = os.read(fd, KEY_SIZE + 1)
            finally:
                os.close(fd)
            if len(data) != KEY_SIZE:
                return None
            return hashlib.blake2b(data + struct.pack("<QQq", st.st_dev, st.st_ino,
                                                      st.st_ctime_ns), digest_size=32).digest()
        return None
    except OSError:
        return None
    finally:
        os.close(private)


def _read(root: str) -> Optional[bytes]:
    """The cache file's bytes, if it is a regular file of at most MAX_BYTES in a private
    directory that is no symlink."""
    try:
        private = os.open(os.path.join(root, PRIVATE), _DIR)
    except OSError:
        return None
    try:
        fd = os.open(FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=private)
    except OSError:
        return None
    finally:
        os.close(private)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None
        chunks, total = [], 0
        while total <= MAX_BYTES:
            chunk = os.read(fd, max(st.st_size + 1 - total, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks) if total <= MAX_BYTES else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _write(root: str, data: bytes, exclusive: bool) -> None:
    """Rename a complete new cache into place, SIGINT/SIGTERM/SIGHUP held while it is
    written (a kill leaves the old cache or the new one, and a unique temporary that the
    next build removes)."""
    from .outdir import _hold_signals, _release_signals
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(PRIVATE, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        private = os.open(PRIVATE, _DIR, dir_fd=root_fd)
    finally:
        os.close(root_fd)
    held = _hold_signals()
    try:
        if exclusive:
            for name in os.listdir(private):
                if name.startswith(_TEMPORARY) and name.endswith(".tmp"):
                    os.unlink(name, dir_fd=private)
        _ignored(private)
        temporary = f"{_TEMPORARY}{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=private)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(temporary, FILE, src_dir_fd=private, dst_dir_fd=private)
        except OSError:
            try:
                os.unlink(temporary, dir_fd=private)
            except OSError:
                pass
            raise
    finally:
        _release_signals(held)
        os.close(private)


def _ignored(private: int) -> None:
    """A .gitignore that keeps the private directory out of the repository that holds
    the output directory (an output directory is committed; its cache never is)."""
    try:
        fd = os.open(".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644, dir_fd=private)
    except FileExistsError:
        return
    try:
        os.write(fd, IGNORE.encode())
    finally:
        os.close(fd)


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
