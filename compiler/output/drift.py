"""Drift: what differs between an output directory and what its specs build now (`cgsc
check`), and what under it no spec accounts for. Never writes."""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence

from ..core import inputs
from ..core.rules import Rule
from .emit import files_for

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline.build import GuestOutput

DRIFT = Rule(
    "CGS-CHECK-001", "a committed artifact differs from what its spec builds",
    "Deployment pipelines consume the committed artifacts; when they drift from the "
    "reviewed spec, the guest that launches is not the one that was reviewed.",
    "cgsc check", fix="Run `cgsc build` on the spec and commit the result.")


class Drift(NamedTuple):
    path: str        # the artifact's path on disk
    kind: str        # "changed", "missing", "extra", "mode", "pending"; "orphan", "leftover"
    detail: str      # a unified diff, or a one-line description
    note: str = ""   # what a reviewer reads without the diff: a changed launch measurement


STALE_HINT = ("run `cgsc build` on its spec, then commit what it writes (`git add` the output "
              "directory: pre-commit checks what is staged)")


def finding(root: str, out: GuestOutput, drifts: Sequence[Drift]):
    """A guest's drift as one diagnostic, located at its spec's [guest] name: which of its
    artifacts are stale, and how."""
    directory = os.path.join(root, out.name)
    parts = []
    for d in drifts:
        if d.path == directory:   # the directory itself: a build to finish, or a symlink
            parts.append("an interrupted build is not finished" if d.kind == "pending"
                         else "it is a symlink, not cgsc's output")
        elif d.kind == "mode":
            parts.append(f"{os.path.basename(d.path)} has {d.detail.split(':', 1)[0]}")
        elif d.detail.startswith(("not a regular file", "unreadable")):
            parts.append(f"{os.path.basename(d.path)} {d.kind} ({d.detail.replace(': ' + d.path, '')})")
        else:
            parts.append(f"{os.path.basename(d.path)} {d.kind}")
    return out.locate(DRIFT.error(("guest", "name"), f"{directory}/ is out of date: "
                                  + ", ".join(parts), STALE_HINT))


def compare(root: str, out: GuestOutput, pending: bool = False,
            expected: Optional[dict] = None) -> List[Drift]:
    """`expected`: files_for(out), when the caller has it."""
    directory = os.path.join(root, out.name)
    expected = files_for(out) if expected is None else expected
    drifts: List[Drift] = []
    if pending:  # outdir.py: a committed build was interrupted; its files are half installed
        drifts.append(Drift(directory, "pending", f"interrupted build not yet finished: "
                            f"{directory} (the next `cgsc build` completes it)"))
    if os.path.islink(directory):  # never read through a symlink cgsc does not write through
        return drifts + [Drift(directory, "changed", f"a symlink, not cgsc's output: {directory}")]
    for name, (content, mode, _digest) in sorted(expected.items()):
        path = os.path.join(directory, name)
        try:
            actual, actual_mode = _read_file(path)
        except FileNotFoundError:
            drifts.append(Drift(path, "missing", f"missing: {path}"))
            continue
        except OSError as exc:
            drifts.append(Drift(path, "changed", f"unreadable: {path} ({exc})"))
            continue
        if actual is None:
            drifts.append(Drift(path, "changed", f"not a regular file: {path}"))
        elif actual != content:
            try:
                text, ours = actual.decode("utf-8"), content.decode("utf-8")
            except UnicodeDecodeError as exc:
                drifts.append(Drift(path, "changed", f"unreadable: {path} ({exc})"))
                continue
            from difflib import unified_diff  # only for a drift
            diff = unified_diff(text.splitlines(keepends=True), ours.splitlines(keepends=True),
                                fromfile=f"{path} (on disk)", tofile=f"{path} (from spec)")
            note = _measurement_lines(name, text, ours)
            drifts.append(Drift(path, "changed", note + "".join(diff), note))
        elif actual_mode != mode:
            drifts.append(Drift(path, "mode", f"mode {actual_mode:04o}, expected {mode:04o}: {path}"))
    if os.path.isdir(directory):
        for name in sorted(set(os.listdir(directory)) - set(expected)):
            path = os.path.join(directory, name)
            drifts.append(Drift(path, "extra", f"extra: {path}"))
    return drifts


def _read_file(path: str):
    """(bytes, permission bits) of a file, or (None, 0) when it is not a regular file (a
    FIFO planted there would block a reader; a symlink, even to the same bytes, is not
    what cgsc writes, and git would commit the link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            return None, 0
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, 0
        if st.st_size > inputs.ARTIFACT.limit:   # not cgsc's: no need to read it to say so
            return b"", stat.S_IMODE(st.st_mode)
        try:
            return inputs.read_fd(fd, path, inputs.ARTIFACT, st.st_size), stat.S_IMODE(st.st_mode)
        except inputs.InputError as exc:
            if exc.rule != "size":
                raise OSError(exc.detail) from None
            return b"", stat.S_IMODE(st.st_mode)   # it grew past the bound while read
    finally:
        os.close(fd)


ORPHAN = Rule(
    "CGS-CHECK-002", "files under the output directory that no reviewed spec accounts for",
    "Everything under the output directory may be deployed. A guest directory whose manifest "
    "names a spec that no longer exists (or that now builds a guest of another name), a "
    "directory without a manifest, or any other file there would be deployed though no "
    "reviewed spec describes it; with its manifest deleted, a tampered artifact would "
    "otherwise go unchecked.",
    "cgsc check --all",
    fix="Remove what no spec builds (`git rm -r out/<name>`), restore the spec, or rebuild it "
        "(`cgsc build`, which writes the manifest).")


UNPRUNED = Rule(
    "CGS-PRUNE-001", "`--prune` leaves what cgsc did not make",
    "`cgsc build --prune` removes a guest directory that no spec of the build makes only when "
    "cgsc made it: its manifest.json is cgsc's, names the directory's guest, and every other "
    "file there is an artifact that manifest lists, unchanged since cgsc wrote it. A file "
    "someone added or edited, a subdirectory, a symlink or a directory without cgsc's "
    "manifest may be someone's work: it is left whole.",
    "cgsc build --prune", severity="warning",
    fix="Remove it by hand if nothing needs it, or move it out of the output directory.")


DISCOVER_PARALLEL = 1000   # guest directories from which every core reads a share
_BLOCK = 256               # guest directories per unit of work handed out


def discover(root: str, jobs: Optional[int] = None):
    """Every guest directory under the output directory `root` that has a manifest:
    [(spec path, targets, directory, base paths)] for those whose spec exists, and a Drift for
    each whose spec is gone and for every other entry of `root` (a directory without a
    manifest, a stray file or symlink): nothing under `root` goes unaccounted for, except
    cgsc's private state directory. Spec paths in manifests are relative to the repository
    that holds the output directory (see cgsc.spec.paths), else to the working directory.
    A large output directory's manifests are read by `jobs` processes (None: one per
    core). Raises OSError when `root` cannot be listed."""
    from ..spec.paths import find_root
    cwd = os.getcwd()
    base = find_root(root) or cwd
    with os.scandir(root) as listing:   # an entry's type from the listing: no stat each
        entries = sorted((e.name, _is_directory(e)) for e in listing)

    def look(block):
        return _discovered(block, os.path.join(root, ""), base, cwd.rstrip(os.sep) + os.sep)
    if len(entries) < DISCOVER_PARALLEL:
        return look(entries)
    from .workers import WorkerDied, blocks, cores, pulled, worker_init
    try:
        parts = pulled(look, blocks(entries, _BLOCK), cores() if jobs is None else jobs,
                       worker_init, lambda: None)
    except WorkerDied:   # reading is read-only: do it all here instead
        return look(entries)
    return ([f for found, _orphans in parts for f in found],
            [o for _found, orphans in parts for o in orphans])


def _discovered(entries, prefix: str, base: str, here: str):
    """discover() of `entries` ((name, whether a directory), in order) of the output
    directory (`prefix`: its path and a separator), spec paths relative to `base`, made
    relative to the working directory `here` (with a separator). (Kept to its system
    calls: check --all runs it for every guest.)"""
    from ..pipeline.build import REFERENCE_VALUES
    from .emit import MANIFEST
    from .outdir import PRIVATE
    found, orphans = [], []
    for name, is_directory in entries:
        directory = prefix + name
        if not is_directory:   # (a symlink is not one)
            orphans.append(Drift(directory, "orphan", f"unaccounted: {directory}: not a guest "
                                 "directory; no spec builds it"))
            continue
        if name == PRIVATE:
            continue   # outdir.py: staging and journal of a build, never deployed
        manifest = f"{directory}{os.sep}{MANIFEST}"
        try:
            plain_file = stat.S_ISREG(os.lstat(manifest).st_mode)   # (a symlink is not)
        except OSError:
            plain_file = False
        if not plain_file:
            orphans.append(Drift(directory, "orphan", f"unaccounted: {directory}: no {MANIFEST}; "
                                 "no spec accounts for its files"))
            continue
        try:
            doc = inputs.load_json(inputs.read(manifest, inputs.MANIFEST), manifest, inputs.MANIFEST)
            spec = doc["spec"][0]["path"]
            bases = [os.path.join(base, s["path"]) for s in doc["spec"][1:]]
            targets = tuple(dict.fromkeys(a["target"] for a in doc.get("artifacts", [])
                                          if a["target"] != REFERENCE_VALUES))
        except inputs.InputError as exc:
            orphans.append(Drift(manifest, "orphan", f"unreadable manifest: {manifest} ({exc.detail})"))
            continue
        except (KeyError, IndexError, TypeError) as exc:
            orphans.append(Drift(manifest, "orphan", f"unreadable manifest: {manifest} ({exc})"))
            continue
        path = os.path.join(base, spec) if isinstance(spec, str) else ""
        if not path or not os.path.isfile(path):
            orphans.append(Drift(directory, "orphan",
                                 f"orphan: {directory}: its spec {spec} is gone"))
            continue
        normal = os.path.normpath(path)   # what relpath() gives, without its getcwd()s
        found.append((normal[len(here):] if normal.startswith(here) else os.path.relpath(path),
                      targets, directory, bases))
    return found, orphans


def _is_directory(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:   # (no type in the listing, and no lstat either)
        return False


def gather(specs: Sequence[str], root: str, requested: Sequence[str], everything: bool,
           jobs: Optional[int] = None):
    """What to check: the named specs and (with `everything`) every spec whose manifest is
    under `root`, each with the targets its manifest lists unless -t names some. Returns
    (targets -> specs, Homes: the directories whose manifest names each spec, orphaned
    or unaccounted entries of `root`). `jobs`: as for discover()."""
    from ..spec.paths import real_path
    groups = {tuple(requested): list(specs)}   # targets -> the specs checked with them
    homes = Homes({}, {})
    orphans: List[Drift] = []
    if everything:
        found, orphans = discover(root, jobs)
        reals = homes.reals
        for spec in specs:
            reals[spec] = real_path(spec)
        # A base named on the command line (pre-commit passes changed files) is checked
        # through the guests that extend it, not built as a guest of its own.
        bases = {real_path(b) for *_rest, chain in found for b in chain}
        groups[tuple(requested)] = [s for s in specs if reals[s] not in bases]
        named = set(reals.values())
        for spec, built, directory, _chain in found:
            real = reals[spec] = real_path(spec)
            homes.directories.setdefault(real, []).append(directory)
            if real not in named:
                named.add(real)
                groups.setdefault(tuple(requested) or built, []).append(spec)
    return groups, homes, orphans


class Homes(NamedTuple):
    directories: Dict[str, List[str]]   # real spec path -> directories of its manifests
    reals: Dict[str, str]               # spec path as checked -> its real path


def leftovers(root: str) -> List[Drift]:
    """What a killed build (SIGKILL, a power cut) left in cgsc's private directory without
    a journal to finish: staged, possibly partial artifacts that look like output (the
    incremental cache's files, or an empty directory, are not debris). Called under the
    shared lock, so a build in progress is never mistaken for one. A committed build's
    journal is reported per guest instead ("interrupted build not yet finished")."""
    from .outdir import JOURNAL, PRIVATE
    private = os.path.join(root, PRIVATE)
    if os.path.islink(private) or not os.path.isdir(private):
        return []
    # the incremental cache stays between runs; a temporary its killed writer left is no
    # output either (the next build removes it)
    from .cache_file import NAMES, temporary
    try:
        found = sorted(os.listdir(private))
    except PermissionError:   # another user's (mode 0700, kept for its cache): for them to
        return []             # check, as pending() does
    names = [name for name in found if name not in NAMES and not temporary(name)]
    if JOURNAL in names or not names:
        return []
    paths = []
    for name in names:   # staging/<build> of each build, or what else is there
        path = os.path.join(private, name)
        inside = sorted(os.listdir(path)) if os.path.isdir(path) and not os.path.islink(path) else []
        paths += [os.path.join(path, entry) for entry in inside] or [path]
    return [Drift(path, "leftover", f"unaccounted: {path}: left by an interrupted build")
            for path in paths]


def renamed(results, homes: Homes) -> List[Drift]:
    """Guest directories whose manifest names a spec that builds a guest of another name
    (orphans too): a renamed guest, or a copy of a guest directory under another name."""
    if not homes.directories:   # (only check --all has them)
        return []
    from ..spec.paths import real_path
    found = []
    for r in results:
        real = homes.reals.get(r.path) or real_path(r.path)   # (resolved once: gather)
        found += [Drift(home, "orphan", f"orphan: {home}: {r.path} now builds "
                        f"guest {r.name!r}, not {os.path.basename(home)!r}")
                  for home in homes.directories.get(real, ()) if r.name != os.path.basename(home)]
    return found


def _measurement_lines(name: str, actual: str, expected: str) -> str:
    """For a changed manifest: the launch measurement change as readable lines."""
    import json

    from ..measure.record import digest_change
    from .emit import MANIFEST
    if name != MANIFEST:
        return ""
    try:
        old = inputs.parse_json(actual, name, inputs.MANIFEST).get("attestation")
    except (inputs.InputError, AttributeError):
        old = None
    lines = digest_change(old, json.loads(expected).get("attestation"))
    return "".join(line + "\n" for line in lines)
