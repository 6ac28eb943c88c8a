"""Fleet builds and checks: one spec at a time through a task that compiles, renders and
stages (or compares) it, run in this process or in worker processes.

A large fleet uses every core; a small one never pays for starting workers. Workers
return only small records (names, diagnostics), so memory does not grow with the fleet:
rendered artifacts go straight to the staging directory (build) or are compared and
dropped (check). Results are consumed in spec order and the same task runs either way,
so the output, its order and the diagnostics are the same as a one-process run.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..core.diagnostics import Diagnostic, SpecError, once
from .emit import WriteError

# Below this many specs a build stays in one process: starting workers (tens of ms)
# would cost more than they save.
PARALLEL_MIN = 48


class Result(NamedTuple):
    path: str
    name: Optional[str]                  # None when the spec has errors
    problems: Tuple[Diagnostic, ...]     # its errors
    diagnostics: Tuple[Diagnostic, ...]  # its warnings (build), warnings + drift (check)
    files: Tuple[Tuple[str, str], ...]   # (file name, sha256) staged for it (build)
    drifts: Tuple[Tuple[str, str, str, str], ...] = ()  # (path, kind, detail, note) (check)
    skipped: Tuple[Tuple[str, str, str], ...] = ()  # (target, rule, reason) a default build left out
    machine: str = ""                    # its QEMU machine type
    claims: tuple = ((), ())             # conflicts.hashed: what it takes on its host (None:
    #                                      taken from the cache, in the registry already)
    refused: str = ""                    # why its files could not be staged (a full disk)
    unchanged: bool = False              # up to date on disk: nothing staged (build)
    cache: object = None                 # its new cache record (cache.Cache.observe)


class Job(NamedTuple):
    mode: str                 # "build" or "check"
    requested: Tuple[str, ...]
    root: str
    staging: object = None    # build: where its guests are staged (an outdir.Staging)
    pending: Tuple[str, ...] = ()  # check: guests an interrupted build left half-installed
    host: Optional[dict] = None    # the --host profile
    strict: bool = False           # --strict: unwaived warnings are errors
    cache: object = None           # the output directory's cache.Cache (None: --no-cache)


_JOB: Optional[Job] = None
_STAGE = True   # cleared in a one-process build once a spec has failed: nothing to stage


def _task(item: Tuple[int, str]) -> Result:
    from ..pipeline.build import build_one
    index, path = item
    job = _JOB
    started = time.time_ns()
    out, problems = build_one(path, job.requested, job.host, job.strict)
    if out is None:   # errors, or an abstract base (no name, no problems): nothing to build
        return Result(path, None, tuple(problems), (), ())
    report = _report(out)
    if job.mode == "check":
        from .drift import compare, finding
        drifts = compare(job.root, out, pending=out.name in job.pending)
        found = ((finding(job.root, out, drifts),) if drifts else ()) + report["diagnostics"]
        return Result(**{**report, "diagnostics": found}, path=path, problems=(), files=(),
                      drifts=tuple(tuple(d) for d in drifts),
                      cache=None if drifts else _observed(job, path, out, report, None, started))
    from .emit import files_for
    files = files_for(out)
    if job.cache is not None:   # incremental: a guest already on disk is not written again
        from .drift import compare
        if not compare(job.root, out, expected=files):
            return Result(**report, path=path, problems=(),
                          files=tuple((name, f[2]) for name, f in files.items()),
                          unchanged=True, cache=_observed(job, path, out, report, files, started))
    staged, refused = (), ""
    if _STAGE:
        from .outdir import stage
        try:
            staged = stage(job.staging, str(index), files)
        except WriteError as exc:   # reported unless a spec error comes too, as one process does
            refused = str(exc)
    return Result(**report, path=path, problems=(), files=staged, refused=refused)


def _report(out) -> dict:
    """The fields of a guest's Result that come from compiling it: the same whether it is
    compiled or taken from the cache (which records them: cache.Cache.observe)."""
    from ..pipeline.conflicts import hashed
    return {"name": out.name, "diagnostics": tuple(out.diagnostics),
            "skipped": tuple(out.skipped), "machine": out.machine,
            "claims": hashed(out.claims, out.host)}


def _observed(job: Job, path: str, out, report: dict, files, started: int):
    """The cache record of a guest just found up to date (None without a cache)."""
    if job.cache is None:
        return None
    if files is None:
        from .emit import files_for
        files = files_for(out)
    return job.cache.observe(path, out, report, list(files), started)


def _hit(check: bool, path: str, found) -> Result:
    """The Result of a guest the cache says is up to date ((name, diagnostics, skipped,
    machine, its artifacts' names) from cache.Cache.summaries): what the task gives for it
    when it compiles and compares it (`check`: or when it builds it)."""
    name, diagnostics, skipped, machine, names = found
    if check:   # (every field given: _make is a tuple's, not the keyword constructor)
        return _MAKE((path, name, (), diagnostics, (), (), skipped, machine, None) + _UNSET)
    from .cache import artifact_names
    return Result(path, name, (), diagnostics,
                  tuple((f, "") for f in artifact_names(names, name)), (), skipped, machine,
                  None, unchanged=True)


_MAKE = Result._make
_UNSET = tuple(Result._field_defaults[f] for f in Result._fields[9:])   # refused, unchanged, cache


def default_jobs(count: int) -> int:
    from .workers import cores
    return 1 if count < PARALLEL_MIN else cores()


def _results(paths: Sequence[str], job: Job, jobs: int, registry, offset: int = 0):
    """Every spec's Result, in spec order; each boot file is read once for all of them
    (forked workers inherit what this process read before, then keep their own). The
    claims of the guests taken from the cache go to `registry` at once, as those of
    guests `offset` + their index (their Results' claims are None)."""
    from ..core.filecache import session
    with session():
        yield from _results_of(paths, job, jobs, registry, offset)


def _results_of(paths: Sequence[str], job: Job, jobs: int, registry, offset: int):
    global _JOB, _STAGE
    items = list(enumerate(paths))
    _JOB, _STAGE = job, True   # for _task, in this process and (forked) in workers
    if job.cache is None:
        yield from _computed(items, jobs)
        return
    import gc

    from .cache import valid_indexes
    hits = {}
    suffix = job.cache.suffix(job.requested, job.strict)
    gc.freeze()   # the records and modules loaded: the collector's full passes, which the
    try:          # objects made for 10,000 guests set off, would scan them every time
        found_indexes, claims = valid_indexes(job.cache, items, suffix, job.pending, jobs,
                                              _prepare)
        registry.extend(claims, offset)
        check = job.mode == "check"
        for index, found in zip(found_indexes, job.cache.summaries(
                [paths[i] for i in found_indexes], suffix)):
            if found is not None:
                hits[index] = _hit(check, paths[index], found)
    finally:
        gc.unfreeze()
    rest = [item for item in items if item[0] not in hits]
    # the processes for what is left to compile (as many as asked when nothing was cached)
    computed = _computed(rest, jobs if len(rest) == len(items)
                         else min(jobs, default_jobs(len(rest))))
    for index, _path in items:
        yield hits[index] if index in hits else next(computed)


def _computed(items, jobs: int):
    """_task of each item, in order: in this process, or with forked workers."""
    global _STAGE
    if jobs <= 1 or len(items) < 2 or not hasattr(os, "fork"):
        for item in items:
            result = _task(item)
            if result.problems or result.refused:
                _STAGE = False   # nothing will be written: staging more is wasted work
            yield result
        return
    # The first spec here, before the workers fork: they inherit what it loaded and read
    # (the measuring library, each boot file's digest, a firmware's pages) instead of each
    # doing it again (a measured fleet: 13% less CPU; a plain one: the same)
    first = _task(items[0])
    if first.problems or first.refused:
        _STAGE = False
    yield first
    yield from _parallel(items[1:], min(jobs, len(items) - 1))


def _parallel(items, jobs: int):
    import gc

    from .workers import WorkerDied, ordered_map, worker_init
    _warm()  # workers are forked: they inherit the schema check and templates loaded once here
    gc.freeze()  # what is loaded now outlives the workers: their collector never scans
    #              (and so never copies) the pages they share with this process
    try:
        for results in ordered_map(_chunk, items, jobs, worker_init):
            yield from results
    except WorkerDied as exc:
        raise WriteError("a worker process died (killed by a signal or out of memory)") from exc
    finally:
        gc.unfreeze()


def _chunk(items) -> List[Result]:
    return [_task(item) for item in items]


def _prepare() -> None:
    """What compiling a guest loads, loaded ahead: while threads stat a large fleet's
    cache records (cache.valid_indexes), for the guests that miss."""
    from ..pipeline import build  # noqa: F401 (imported for its cost, here)
    _warm()


def _warm() -> None:
    from ..spec.validate import quick_check
    from ..targets.render import template
    from ..targets.template_compiler import TEMPLATES
    quick_check()
    for name in TEMPLATES:
        template(name)


def _owner(path: str, job: Job):
    """A guest compiled again for its exact claims (conflicts.Registry); None if it no
    longer compiles (its file changed since)."""
    from ..pipeline.build import build_one, owner
    out, _problems = build_one(path, job.requested, job.host, job.strict)
    return owner(out) if out is not None else None


class Built(NamedTuple):
    count: int                           # guests written
    first: Optional[Result]              # the first one (its name and files)
    diagnostics: List[Diagnostic]        # every guest's warnings, each once (core.once)
    skipped: List[Tuple[str, str, str, str]] = []   # (guest, target, rule, reason)
    floating: Tuple[Optional[tuple], int] = (None, 0)  # the first guest whose machine type
    #                                      floats, as (build.Where, machine); how many float
    abstract: int = 0                    # abstract bases named, checked and not built
    pruned: List[str] = []               # guest directories removed (--prune)
    unchanged: int = 0                   # of `count`, guests already up to date (not written)


def build(paths: Sequence[str], requested: Sequence[str], root: str,
          jobs: Optional[int] = None, host: Optional[dict] = None, strict: bool = False,
          prune: bool = False, cache: bool = True) -> Built:
    """Build and write a fleet; raises SpecError (nothing written) or WriteError. Each
    result is journalled as it arrives and then dropped: memory stays flat (what is kept
    per guest is the hashes of its claims, for conflicts, and its spec path is the
    caller's). `prune`: also remove the guest directories cgsc made that no spec of this
    build makes, in the same commit (outdir.OutputDir.prune). `cache`: use and update
    OUT/.cgsc/cache.json (guests found up to date there are not compiled, and no guest
    already on disk is written again)."""
    from ..host.profile import is_floating
    from ..pipeline.conflicts import Registry, Where
    from .outdir import OutputDir
    jobs = default_jobs(len(paths)) if jobs is None else jobs
    problems: List[Tuple[str, Diagnostic]] = []
    warnings: List[Tuple[str, Diagnostic]] = []
    skipped: List[Tuple[str, str, str, str]] = []
    registry = Registry()
    count, first_result, refused, abstract, unchanged = 0, None, None, 0, 0
    built = set()   # guest names, for --prune
    first_floating, floating = None, 0
    with OutputDir(root) as out:
        memo = _cache(root, host) if cache else None
        job = Job("build", tuple(requested), root, out.staging_area, host=host, strict=strict,
                  cache=memo)
        for index, r in enumerate(_results(paths, job, jobs, registry)):
            path = paths[index]   # the caller's string, not the worker's copy of it
            if r.problems:
                problems += [(path, d) for d in r.problems]
            elif r.name is None:
                abstract += 1
            else:
                if r.claims is not None:
                    registry.add(index, r.claims)
                count += 1
                unchanged += r.unchanged
                warnings += [(path, d) for d in r.diagnostics]
                if prune:
                    built.add(r.name)
                skipped.extend((r.name,) + why for why in r.skipped)
                if is_floating(r.machine):
                    floating += 1
                    first_floating = first_floating or (Where(path, ("guest", "machine")), r.machine)
                first_result = first_result or r
                if r.refused and refused is None:
                    refused = WriteError(r.refused)
                if not problems and refused is None and not r.unchanged:
                    try:
                        out.add(r.name, str(index), r.files)
                    except WriteError as exc:  # reported unless a spec error comes too
                        refused = exc
                if r.cache is not None:
                    memo.store(path, job.requested, job.strict, r.cache)
        problems += registry.conflicts(lambda i: _owner(paths[i], job))
        if problems:
            raise SpecError(once(problems))
        if refused is not None:
            raise refused
        pruned, kept = out.prune(built) if prune else ([], [])
        out.commit()
        if memo is not None:
            memo.save(exclusive=True)
    warnings += [(d.file, d) for d in (_unpruned(root, entry, why) for entry, why in kept)]
    return Built(count, first_result, once(warnings), skipped, (first_floating, floating),
                 abstract, pruned, unchanged)


def _cache(root: str, host: Optional[dict]):
    from .cache import load
    return load(root, host)


def _unpruned(root: str, entry: str, why: str) -> Diagnostic:
    from .drift import UNPRUNED
    return UNPRUNED.warning((), f"not pruned: {why}",
                            "remove it by hand if nothing needs it").located(os.path.join(root, entry), 0)


def check(groups: Dict[Tuple[str, ...], Sequence[str]], root: str,
          jobs: Optional[int] = None, host: Optional[dict] = None,
          strict: bool = False, cache: bool = True) -> List[Result]:
    """Compare a fleet with what is on disk, under a shared lock; raises SpecError.
    `groups`: the targets to check -> the specs checked with them (a manifest says which
    targets its guest was built for); conflicts between guests span the groups. `cache`:
    use and update OUT/.cgsc/cache.json (guests found up to date there are neither
    compiled nor compared; the ones found up to date now are recorded)."""
    from ..pipeline.conflicts import Registry
    from .outdir import pending, shared_lock
    lock = shared_lock(root)
    problems: List[Tuple[str, Diagnostic]] = []
    valid: List[Result] = []
    registry = Registry()
    owners: List[Tuple[str, Job]] = []   # guest -> (spec, its job): compiled again on a conflict
    try:
        waiting = tuple(pending(root))
        memo = _cache(root, host) if cache and lock >= 0 else None
        for requested, paths in groups.items():
            if not paths:
                continue
            job = Job("check", tuple(requested), root, pending=waiting, host=host, strict=strict,
                      cache=memo)
            count = default_jobs(len(paths)) if jobs is None else jobs
            base = len(owners)
            owners += [(path, job) for path in paths]
            for index, r in enumerate(_results(paths, job, count, registry, base)):
                if r.problems:
                    problems += [(paths[index], d) for d in r.problems]
                elif r.name is not None:   # (an abstract base is checked through its children)
                    if r.claims is not None:
                        registry.add(base + index, r.claims)
                    valid.append(r)
                    if r.cache is not None:
                        memo.store(paths[index], job.requested, job.strict, r.cache)
        if memo is not None:
            memo.save()
    finally:
        if lock >= 0:
            os.close(lock)
    problems += registry.conflicts(lambda i: _owner(*owners[i]))
    if problems:
        raise SpecError(once(problems))
    return valid
