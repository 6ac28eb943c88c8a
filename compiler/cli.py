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

    b = sub.add_parser("build", help="compile specs into artifacts under out/<name>/")
    b.add_argument("specs", nargs="+", metavar="SPEC")
    b.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
    b.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                   help="build only this target (repeatable); default: [targets] build, "
                        "else every built-in target that can express the spec")
    b.add_argument("--stdout", action="store_true", help="print the artifacts instead of writing them")
    b.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                   help="worker processes (default: every core for a large fleet, else 1)")
    with_format(b)
    v = sub.add_parser("validate", help="check specs without writing anything")
    v.add_argument("specs", nargs="+", metavar="SPEC")
    with_format(v)
    c = sub.add_parser("check", help="rebuild in memory and compare with the artifacts on disk")
    c.add_argument("specs", nargs="+", metavar="SPEC")
    c.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
    c.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                   help="as for build")
    c.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N", help="as for build")
    with_format(c)
    e = sub.add_parser("explain", help="every launch-security value, its source, and its risks")
    e.add_argument("spec", metavar="SPEC")
    with_format(e, ("text", "json"))
    r = sub.add_parser("rules", help="list the rules, or explain one")
    r.add_argument("rule", nargs="?", metavar="RULE-ID")
    sub.add_parser("schema", help="print the JSON Schema of the spec language")
    sub.add_parser("targets", help="list installed targets")
    comp = sub.add_parser("completion", help="print a shell completion script")
    comp.add_argument("shell", choices=("bash", "zsh"))
    return p


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes, not {text!r}")
    return int(text)


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


def _build(args) -> int:
    from cgsc.emit import WriteError
    if args.stdout:
        from cgsc.build import build
        outputs = build(args.specs, args.target)
        _report([d for o in outputs for d in o.diagnostics], args.format)
        many = len(outputs) > 1 or sum(len(o.artifacts) for o in outputs) > 1
        for o in outputs:
            for _target, a in o.artifacts:
                if many:
                    sys.stdout.write(f"==> {o.name}/{a.filename} <==\n")
                sys.stdout.write(a.content)
        return EXIT_OK
    from cgsc import fleet
    try:
        built = fleet.build(args.specs, args.target, args.output, args.jobs)
    except WriteError as exc:
        print(f"cgsc: {exc}; nothing written", file=sys.stderr)
        return EXIT_USAGE
    _report(built.diagnostics, args.format)
    if args.format == "text":
        if built.count == 1:
            names = ", ".join(sorted(name for name, _sha in built.first.files))
            print(f"cgsc: {args.output}/{built.first.name}/: {names}", file=sys.stderr)
        else:
            print(f"cgsc: {built.count} guests written under {args.output}/", file=sys.stderr)
    return EXIT_OK


def _validate(args) -> int:
    from cgsc.compile import compile_spec
    problems, warnings = [], []
    for spec in args.specs:
        try:
            warnings.extend(compile_spec(spec).warnings)
        except SpecError as exc:
            problems.extend(exc.diagnostics)
    if problems:
        raise SpecError(problems + warnings)
    _report(warnings, args.format)
    if args.format == "text":
        print(f"cgsc: {len(args.specs)} spec{'s' if len(args.specs) != 1 else ''} valid",
              file=sys.stderr)
    return EXIT_OK


def _check(args) -> int:
    from cgsc import fleet
    from cgsc.check import DRIFT
    outputs = fleet.check(args.specs, args.target, args.output, args.jobs)
    findings = []
    for o in outputs:
        if args.format == "text":
            for _path, _kind, detail in o.drifts:
                sys.stdout.write(detail if detail.endswith("\n") else detail + "\n")
        findings += list(o.diagnostics)
    _report(findings, args.format)
    drift_count = sum(1 for d in findings if d.rule == DRIFT.id)
    if args.format == "text":
        print(f"cgsc: {drift_count} artifact{'s' if drift_count != 1 else ''} out of date"
              if drift_count else f"cgsc: {len(outputs)} guest(s) up to date", file=sys.stderr)
    return EXIT_INVALID if drift_count else EXIT_OK


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
             "rules": _rules, "schema": _schema, "targets": _targets, "completion": _completion}
