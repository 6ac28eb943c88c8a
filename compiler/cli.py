"""Command line: a thin shell over the pipeline, with one error boundary.

Exit status: 0 success, 1 invalid spec or drift found by `check`, 2 usage (an unwritable
output directory included), 3 internal error (a bug).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import cgsc
from cgsc.diagnostics import Diagnostic, SpecError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
FORMATS = ("text", "json", "sarif", "github")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # keep argparse's message, our exit path
        self.print_usage(sys.stderr)
        raise _Usage(message)


class _Usage(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cgsc", description="Confidential Guest Spec Compiler: TOML guest "
                "specs to QEMU launch scripts, systemd units and libvirt domain XML.")
    p.add_argument("--version", action="version", version=f"cgsc {cgsc.__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def with_format(cmd, choices=FORMATS):
        cmd.add_argument("--format", choices=choices, default="text",
                         help="diagnostics as text (stderr), or json, sarif, github (stdout)")

    def with_host(cmd):
        cmd.add_argument("--host", metavar="HOST.json", help="check against a host profile "
                         "(`cgsc probe`, or a shipped one: debian-12, ...) and pin the machine type")

    b = sub.add_parser("build", help="compile specs into artifacts under out/<name>/")
    b.add_argument("specs", nargs="+", metavar="SPEC")
    b.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
    b.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                   help="build only this target (repeatable); default: [targets] build, "
                        "else every built-in target that can express the spec")
    b.add_argument("--stdout", action="store_true", help="print the artifacts instead of writing them")
    with_format(b)
    with_host(b)
    v = sub.add_parser("validate", help="check specs without writing anything")
    v.add_argument("specs", nargs="+", metavar="SPEC")
    with_format(v)
    with_host(v)
    c = sub.add_parser("check", help="rebuild in memory and compare with the artifacts on disk")
    c.add_argument("specs", nargs="+", metavar="SPEC")
    c.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
    c.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                   help="as for build")
    with_format(c)
    with_host(c)
    e = sub.add_parser("explain", help="every launch-security value, its source, and its risks")
    e.add_argument("spec", metavar="SPEC")
    with_format(e, ("text", "json"))
    r = sub.add_parser("rules", help="list the rules, or explain one")
    r.add_argument("rule", nargs="?", metavar="RULE-ID")
    sub.add_parser("schema", help="print the JSON Schema of the spec language")
    sub.add_parser("targets", help="list installed targets")
    pr = sub.add_parser("probe", help="write a host profile of this host (or of recorded "
                        "`virsh domcapabilities` output) for --host")
    pr.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    pr.add_argument("--from-domcapabilities", metavar="CAPS.xml",
                    help="build the profile from `virsh domcapabilities` XML instead")
    pr.add_argument("--qemu-version", metavar="FILE", help="with --from-domcapabilities: "
                    "`qemu-system-* -version` output")
    pr.add_argument("--qemu-objects", metavar="FILE", help="with --from-domcapabilities: "
                    "`qemu-system-* -object help` output")
    pr.add_argument("--libvirt-version", metavar="X.Y.Z", help="with --from-domcapabilities: "
                    "the host's libvirt version (`virsh version`)")
    pr.add_argument("--name", help="the profile's name (default: this host's name)")
    comp = sub.add_parser("completion", help="print a shell completion script")
    comp.add_argument("shell", choices=("bash", "zsh"))
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    fmt = "text"
    try:
        args = parser().parse_args(argv)
        if args.command is None:
            parser().print_help(sys.stderr)
            return EXIT_USAGE
        fmt = getattr(args, "format", "text")
        return _COMMANDS[args.command](args)
    except _Usage as exc:
        print(f"cgsc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except SpecError as exc:
        _report(exc.diagnostics, fmt, failed=True)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cgsc rules | head`: the reader left; say nothing more
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:  # the one place a bug is caught
        if debug:
            import traceback
            traceback.print_exc()
        else:
            exc = sys.exc_info()[1]
            print(f"cgsc: internal error ({type(exc).__name__}: {exc}). This is a bug; "
                  "please report it with the spec and `cgsc --debug` output.", file=sys.stderr)
        return EXIT_BUG


def _report(diagnostics: List[Diagnostic], fmt: str, failed: bool = False) -> None:
    """Text goes to stderr with a summary line; machine formats go to stdout, whole."""
    from cgsc.report import RENDER
    if fmt != "text":
        sys.stdout.write(RENDER[fmt](diagnostics))
        return
    sys.stderr.write(RENDER["text"](diagnostics))
    if failed:
        errors = sum(1 for d in diagnostics if d.severity == "error")
        print(f"cgsc: {errors} error{'s' if errors != 1 else ''}; nothing written", file=sys.stderr)


def _host(args):
    """The --host profile, or None; an unusable one is a usage error."""
    if not getattr(args, "host", None):
        return None
    from cgsc.hostprofile import ProfileError, load
    try:
        return load(args.host)
    except ProfileError as exc:
        raise _Usage(str(exc)) from None


def _floating_note(args, machines) -> None:
    """Without --host, say once per run that the machine type floats (text output only:
    the machine formats carry the spec's own diagnostics)."""
    from cgsc.hostcheck import FLOATING_MACHINE
    from cgsc.hostprofile import is_floating
    if args.host or args.format != "text":
        return
    floating = [(locate, m) for locate, m in machines if is_floating(m)]
    if floating:
        locate, machine = floating[0]
        d = locate(FLOATING_MACHINE.warning(("guest", "machine"), f"{machine!r} floats"
                   + (f" (and in {len(floating) - 1} more spec(s))" if len(floating) > 1 else ""),
                   "pin it with --host HOST.json (`cgsc probe`)"))
        _report([d], "text")


def _build(args) -> int:
    from cgsc.build import build
    from cgsc.emit import WriteError, files_for, write_all
    outputs = build(args.specs, args.target, _host(args))
    _report([d for o in outputs for d in o.diagnostics], args.format)
    _floating_note(args, [(o.locate, o.machine) for o in outputs])
    if args.stdout:
        many = len(outputs) > 1 or sum(len(o.artifacts) for o in outputs) > 1
        for o in outputs:
            for _target, a in o.artifacts:
                if many:
                    sys.stdout.write(f"==> {o.name}/{a.filename} <==\n")
                sys.stdout.write(a.content)
        return EXIT_OK
    try:
        write_all(args.output, outputs)
    except WriteError as exc:
        print(f"cgsc: {exc}; nothing written", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "text":
        if len(outputs) == 1:
            names = ", ".join(sorted(files_for(outputs[0])))
            print(f"cgsc: {args.output}/{outputs[0].name}/: {names}", file=sys.stderr)
        else:
            print(f"cgsc: {len(outputs)} guests written under {args.output}/", file=sys.stderr)
    return EXIT_OK


def _validate(args) -> int:
    from cgsc.compile import compile_spec
    problems, warnings, plans = [], [], []
    host = _host(args)
    for spec in args.specs:
        try:
            compiled = compile_spec(spec, host) if host else compile_spec(spec)
            warnings.extend(compiled.warnings)
            plans.append((compiled.locate, compiled.plan.machine))
        except SpecError as exc:
            problems.extend(exc.diagnostics)
    if problems:
        raise SpecError(problems + warnings)
    _report(warnings, args.format)
    _floating_note(args, plans)
    if args.format == "text":
        print(f"cgsc: {len(args.specs)} spec{'s' if len(args.specs) != 1 else ''} valid",
              file=sys.stderr)
    return EXIT_OK


def _check(args) -> int:
    from cgsc.build import build
    from cgsc.check import DRIFT, compare
    outputs = build(args.specs, args.target, _host(args))
    findings = []
    for o in outputs:
        drifts = compare(args.output, o)
        if args.format == "text":
            for drift in drifts:
                sys.stdout.write(drift.detail if drift.detail.endswith("\n") else drift.detail + "\n")
        findings += [o.locate(DRIFT.error(("guest", "name"), f"{d.path}: {d.kind}; run `cgsc build`",
                                          "commit what `cgsc build` writes"))
                     for d in drifts]
        findings += list(o.diagnostics)
    _report(findings, args.format)
    drift_count = sum(1 for d in findings if d.rule == DRIFT.id)
    if args.format == "text":
        print(f"cgsc: {drift_count} artifact{'s' if drift_count != 1 else ''} out of date"
              if drift_count else f"cgsc: {len(outputs)} guest(s) up to date", file=sys.stderr)
    return EXIT_INVALID if drift_count else EXIT_OK


def _probe(args) -> int:
    import json

    from cgsc.probe import from_domcapabilities, probe
    if args.from_domcapabilities:
        try:
            profile = from_domcapabilities(args.from_domcapabilities, args.qemu_version,
                                           args.qemu_objects, args.libvirt_version, args.name)
        except (OSError, ValueError) as exc:
            raise _Usage(str(exc)) from None
    else:
        profile = probe(args.name)
    text = json.dumps(profile, indent=2, sort_keys=True) + "\n"
    if args.output:
        from cgsc.probe import write
        try:
            write(args.output, text)
        except OSError as exc:
            print(f"cgsc: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        for note in profile.get("unreadable", []):
            print(f"cgsc probe: could not read {note}", file=sys.stderr)
        print(f"cgsc probe: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _explain(args) -> int:
    from cgsc.explain import explain, to_json, to_text
    info = explain(args.spec)
    sys.stdout.write(to_json(info) if args.format == "json" else to_text(info))
    return EXIT_OK


def _rules(args) -> int:
    from cgsc.report import rule_help
    from cgsc.rules import load_all
    catalogue = load_all()
    if args.rule:
        rule = catalogue.get(args.rule.upper())
        if rule is None:
            raise _Usage(f"no rule {args.rule!r} (`cgsc rules` lists them)")
        print(rule_help(rule))
        return EXIT_OK
    for rule_id in sorted(catalogue):
        rule = catalogue[rule_id]
        print(f"{rule_id:16} {rule.severity:8} {rule.summary}")
    return EXIT_OK


def _schema(args) -> int:
    from cgsc.spec_schema import dumps
    sys.stdout.write(dumps())
    return EXIT_OK


def _targets(args) -> int:
    from cgsc import targets
    for name, summary in targets.available().items():
        print(f"{name:10} {summary}")
    return EXIT_OK


def _completion(args) -> int:
    from cgsc.completion import script
    sys.stdout.write(script(parser(), args.shell))
    return EXIT_OK


_COMMANDS = {"build": _build, "validate": _validate, "check": _check, "explain": _explain,
             "probe": _probe, "rules": _rules, "schema": _schema, "targets": _targets, "completion": _completion}
