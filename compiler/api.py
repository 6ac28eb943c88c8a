"""The public Python API: `cgsc.load`, `cgsc.validate`, `cgsc.build` (docs/api.md).

Each takes a spec path, as the command line does, and runs the same code; none prints,
exits, or raises for a bad spec: the result carries the diagnostics (`Diagnostic`, with
file, line, key path, rule, severity, message and hint). An environment problem (an
output directory that cannot be written, an unusable host profile) raises
`EnvironmentProblem`, the command line's exit status 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .core.diagnostics import ERROR, Diagnostic, SpecError

HostProfile = Union[None, str, dict]


class EnvironmentProblem(Exception):
    """Not the spec's fault: an output directory that cannot be written, a host profile
    that cannot be read (the command line exits 2)."""


@dataclass(frozen=True)
class Loaded:
    """A spec as read: its data with every `extends` base merged, and the files it came from."""
    path: str
    data: dict
    files: Tuple[str, ...]
    diagnostics: Tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(d.severity == ERROR for d in self.diagnostics)


@dataclass(frozen=True)
class Validated:
    """What `cgsc validate` found: ok is False when any diagnostic is an error."""
    path: str
    name: Optional[str]               # the guest's name, when the spec got that far
    mechanism: Optional[str]
    targets: Tuple[str, ...]          # what a build would write
    diagnostics: Tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not any(d.severity == ERROR for d in self.diagnostics)

    @property
    def errors(self) -> List[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == ERROR]

    @property
    def warnings(self) -> List[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != ERROR]


@dataclass(frozen=True)
class Built(Validated):
    """What `cgsc build` makes: file name -> text (the artifacts and manifest.json), in
    memory; `written` is the directory they were installed in, if an output was given."""
    files: Dict[str, str] = field(default_factory=dict)
    manifest: Optional[dict] = None
    written: Optional[str] = None


def _host(host: HostProfile) -> Optional[dict]:
    if host is None or isinstance(host, dict):
        return host
    from .host.profile import ProfileError, load as load_profile
    try:
        return load_profile(host)
    except ProfileError as exc:
        raise EnvironmentProblem(str(exc)) from None


def load(path: str) -> Loaded:
    """Read a spec and its `extends` chain (no validation beyond TOML and the chain)."""
    from .spec.source import load as load_source
    try:
        source = load_source(path)
    except SpecError as exc:
        return Loaded(path, {}, (), tuple(exc.diagnostics))
    files = tuple(f.path for f in getattr(source, "files", ()))
    return Loaded(path, source.data, files)


def validate(path: str, targets: Sequence[str] = (), host: HostProfile = None) -> Validated:
    """Everything `cgsc validate PATH` checks (with -t for each of `targets`, and --host:
    a profile dict, a file, or a shipped profile's name)."""
    built = _build(path, targets, _host(host))
    return Validated(built.path, built.name, built.mechanism, built.targets, built.diagnostics)


def build(path: str, targets: Sequence[str] = (), host: HostProfile = None,
          output: Optional[str] = None) -> Built:
    """Compile a spec into its artifacts, in memory; with `output`, also install them as
    `cgsc build -o OUTPUT` does (the same locked, atomic commit; nothing when the spec is
    invalid)."""
    built = _build(path, targets, _host(host))
    if output is None or not built.ok:
        return built
    from .output import fleet
    from .output.emit import WriteError
    try:
        fleet.build([path], list(targets), output, 1, _host(host))
    except WriteError as exc:
        raise EnvironmentProblem(str(exc)) from None
    except SpecError as exc:   # the spec changed under us
        return Built(path, built.name, built.mechanism, built.targets, tuple(exc.diagnostics))
    return Built(path, built.name, built.mechanism, built.targets, built.diagnostics,
                 built.files, built.manifest, os.path.join(output, built.name))


def _build(path: str, targets: Sequence[str], host: Optional[dict]) -> Built:
    import json

    from .output.emit import MANIFEST, files_for
    from .pipeline.build import build as build_in_memory
    try:
        (out,) = build_in_memory([path], list(targets), host)
    except SpecError as exc:
        return Built(path, None, None, (), tuple(exc.diagnostics))
    files = {name: data.decode("utf-8") for name, (data, _mode, _sha) in files_for(out).items()}
    return Built(path, out.name, out.mechanism, tuple(t for t, _a in out.artifacts),
                 tuple(out.diagnostics), files, json.loads(files[MANIFEST]))
