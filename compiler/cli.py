"""Command line: a thin shell over the pipeline, with one error boundary.

Exit status: 0 success, 1 invalid spec, 2 usage, 3 internal error (a bug).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import cgsc
from cgsc.diagnostics import SpecError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too; keep its message, our prefix
        self.print_usage(sys.stderr)
        raise _Usage(message)


class _Usage(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cgsc", description="Confidential Guest Spec Compiler: TOML guest "
                "specs to QEMU launch scripts, systemd units and libvirt domain XML.")
    p.add_argument("--version", action="version", version=f"cgsc {cgsc.__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    b = sub.add_parser("build", help="compile specs into artifacts under out/<name>/")
    b.add_argument("specs", nargs="+", metavar="SPEC")
    b.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
    b.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                   help="build only this target (repeatable); default: [targets] build, "
                        "else every built-in target that can express the spec")
    b.add_argument("--stdout", action="store_true", help="print the artifacts instead of writing them")
    v = sub.add_parser("validate", help="check specs without writing anything")
    v.add_argument("specs", nargs="+", metavar="SPEC")
    sub.add_parser("schema", help="print the JSON Schema of the spec language")
    sub.add_parser("targets", help="list installed targets")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            _parser().print_help(sys.stderr)
            return EXIT_USAGE
        return _COMMANDS[args.command](args)
    except _Usage as exc:
        print(f"cgsc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except SpecError as exc:
        _report(exc)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except Exception:  # the one place a bug is caught
        if debug:
            import traceback
            traceback.print_exc()
        else:
            exc = sys.exc_info()[1]
            print(f"cgsc: internal error ({type(exc).__name__}: {exc}). This is a bug; "
                  "please report it with the spec and `cgsc --debug` output.", file=sys.stderr)
        return EXIT_BUG


def _report(exc: SpecError) -> None:
    errors = [d for d in exc.diagnostics if d.severity == "error"]
    for d in exc.diagnostics:
        print(d.render(), file=sys.stderr)
    print(f"cgsc: {len(errors)} error{'s' if len(errors) != 1 else ''}; nothing written",
          file=sys.stderr)


def _print_warnings(lines: List[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _build(args) -> int:
    from cgsc.build import build
    from cgsc.emit import files_for, write_guest
    outputs = build(args.specs, args.target)
    _print_warnings([w for o in outputs for w in o.warnings])
    if args.stdout:
        many = len(outputs) > 1 or sum(len(o.artifacts) for o in outputs) > 1
        for o in outputs:
            for _target, a in o.artifacts:
                if many:
                    sys.stdout.write(f"==> {o.name}/{a.filename} <==\n")
                sys.stdout.write(a.content)
        return EXIT_OK
    for o in outputs:
        write_guest(args.output, o)
    if len(outputs) == 1:
        names = ", ".join(sorted(files_for(outputs[0])))
        print(f"cgsc: {args.output}/{outputs[0].name}/: {names}", file=sys.stderr)
    else:
        print(f"cgsc: {len(outputs)} guests written under {args.output}/", file=sys.stderr)
    return EXIT_OK


def _validate(args) -> int:
    from cgsc.compile import compile_spec
    problems = []
    for spec in args.specs:
        try:
            compiled = compile_spec(spec)
            _print_warnings(list(compiled.plan.warnings))
        except SpecError as exc:
            problems.extend(exc.diagnostics)
    if problems:
        raise SpecError(problems)
    print(f"cgsc: {len(args.specs)} spec{'s' if len(args.specs) != 1 else ''} valid", file=sys.stderr)
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


_COMMANDS = {"build": _build, "validate": _validate, "schema": _schema, "targets": _targets}
