"""Command line: a thin shell over the pipeline, with one error boundary.

Exit status: 0 success, 1 invalid spec or drift found by `check`, 2 usage (an unwritable
output directory included), 3 internal error (a bug).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from . import __version__
from .core.diagnostics import Diagnostic, SpecError, once, printable, sort_key
from .core.inputs import resource_error, shown

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
FORMATS = ("text", "json", "sarif", "github")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # keep argparse's message, our exit path
        self.print_usage(sys.stderr)
        raise _Usage(message)


class _Usage(Exception):
    pass


def parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line. `only`: the command being run; the other commands' parsers are
    left out (argparse spends ~0.1 ms per help text looking for translations), which
    parses that command's arguments, and words its help and errors, exactly as the whole
    parser does (tests/test_cli.py)."""
    from .review.helptext import EPILOGS
    p = _Parser(prog="cgsc", description="Confidential Guest Spec Compiler: TOML guest "
                "specs to QEMU launch scripts, systemd units, libvirt domain XML and KubeVirt "
                "manifests.", epilog=EPILOGS[None], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"cgsc {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    _with_output_options(p, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, **kwargs):
        cmd = sub.add_parser(name, help=help, epilog=EPILOGS[name],
                             formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        _with_output_options(cmd, argparse.SUPPRESS)
        return cmd

    def with_format(cmd, choices=FORMATS,
                    help="diagnostics as text (stderr), or json, sarif, github (stdout)"):
        cmd.add_argument("--format", choices=choices, default="text", help=help)

    def with_list(cmd):
        # a fleet too large for a command line (ARG_MAX), or one the interpreter should
        # not copy (it keeps several copies of every argument, ~2 KB each)
        cmd.add_argument("--specs-from", metavar="FILE", help="also the specs listed in FILE, "
                         "one path per line (blank lines ignored; - reads stdin)")

    def spec_command(name: str, help: str):
        """A command on specs named as arguments or listed in a file."""
        cmd = command(name, help)
        cmd.add_argument("specs", nargs="*", metavar="SPEC")
        with_list(cmd)
        return cmd

    def with_cache(cmd):
        cmd.add_argument("--no-cache", action="store_true",
                         help="neither use nor update the output directory's cache of guests "
                              "found up to date (OUT/.cgsc/cache.json): compile every spec")

    def with_strict(cmd):
        cmd.add_argument("--strict", action="store_true", help="an unwaived warning fails, "
                         "as `strict = true` in a spec or base does ([waive] accepts one)")

    def with_host(cmd):
        from .host.profile import shipped
        cmd.add_argument("--host", metavar="HOST", help="check against a host profile and pin "
                         "the machine type: a file from `cgsc probe`, or a shipped profile: "
                         + ", ".join(shipped()))

    if only in (None, "build"):
        b = spec_command("build", "compile specs into artifacts under out/<name>/")
        b.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
        b.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                       help="build only this target (repeatable); default: [targets] build, "
                            "else every built-in target that can express the spec")
        b.add_argument("--stdout", action="store_true",
                       help="print the artifacts on stdout instead of writing them; diagnostics, "
                            "in any --format, then go to stderr")
        b.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                       help="worker processes (default: every core for a large fleet, else 1)")
        b.add_argument("--prune", action="store_true", help="also remove the guest directories "
                       "under DIR that cgsc made and no SPEC of this build makes (name the "
                       "whole fleet); anything else there is left, and said")
        with_cache(b)
        with_format(b)
        with_host(b)
        with_strict(b)
    if only in (None, "validate"):
        v = spec_command("validate", "check specs without writing anything")
        v.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                       help="as for build")
        v.add_argument("--base", action="store_true",
                       help="the SPECs are bases that other specs extend: check their keys and "
                            "values, not that they are whole guests")
        with_format(v)
        with_host(v)
        with_strict(v)
    if only in (None, "check"):
        c = spec_command("check", "rebuild in memory and compare with the artifacts on disk")
        c.add_argument("--all", action="store_true",
                       help="also check every guest whose manifest is under the output directory, "
                            "and report anything else under it (CGS-CHECK-002)")
        c.add_argument("-o", "--output", default="out", metavar="DIR", help="output directory (default: out)")
        c.add_argument("-t", "--target", action="append", default=[], metavar="NAME",
                       help="as for build")
        c.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N", help="as for build")
        c.add_argument("--diff", action="store_true", help="also print the unified diff of "
                       "each changed artifact (text format, on stdout)")
        with_cache(c)
        with_format(c)
        with_host(c)
        with_strict(c)
    if only in (None, "explain"):
        e = command("explain", "every launch-security value, its source, and its risks; "
                    "or a rule (cgsc explain RULE-ID)")
        e.add_argument("specs", nargs="+", metavar="SPEC|RULE-ID")
        e.add_argument("--format", choices=("text", "json"), default="text",
                       help="the explanation as text, or as JSON (one object per spec; a list "
                            "of them for several specs); on stdout")
    if only in (None, "diff"):
        d = command("diff", "what a change to specs does: security-relevant differences in words",
                           description="cgsc diff OLD NEW compares two spec files; cgsc diff --base REV "
                                       "SPEC... compares each spec (and its extends chain) as of the git "
                                       "revision REV with the working tree, guest by guest, and names the "
                                       "guests that REV had and the SPECs no longer build (specs deleted "
                                       "from their directories, guests renamed). A report, not a gate: exit 0.")
        d.add_argument("specs", nargs="+", metavar="SPEC")
        d.add_argument("--base", metavar="REV", help="compare with the specs as of this git revision")
        d.add_argument("--format", choices=("text", "json", "github", "markdown"), default="text",
                       help="the report as text, JSON, GitHub Actions notices or Markdown (for a "
                            "pull-request comment); on stdout")
    if only in (None, "verify"):
        ve = command("verify", "compare a guest's attestation report or quote with "
                     "its predicted values (values only, not signatures)",
                     description="cgsc verify REPORT --guest OUT/NAME reads a raw SEV-SNP "
                                        "attestation report or TDX quote and compares every field "
                                        "the guest's manifest predicts. Exit 0: all match; 1: a "
                                        "field differs or the file is not such a report; 2: the "
                                        "command cannot run. It does not check signatures: give "
                                        "the reference values cgsc wrote to go-sev-guest, "
                                        "go-tdx-guest or Trustee for that.")
        ve.add_argument("report", metavar="REPORT", help="the report or quote, as the guest got it")
        where = ve.add_mutually_exclusive_group(required=True)
        where.add_argument("--guest", metavar="DIR", help="the guest's output directory (OUT/NAME)")
        where.add_argument("--manifest", metavar="FILE", help="the guest's manifest.json")
        with_format(ve, ("text", "json", "sarif"), "the comparison as a table (stdout, its "
                    "verdict on stderr), or json, sarif (stdout)")
    if only in (None, "rules"):
        r = command("rules", "list the rules, or explain one")
        r.add_argument("rule", nargs="?", metavar="RULE-ID")
        r.add_argument("--format", choices=("text", "json"), default="text",
                       help="text, or JSON (a list of rules; one object for one RULE-ID)")
    if only in (None, "schema"):
        sc = command("schema", "print the JSON Schema of the spec language")
        sc.add_argument("--base", action="store_true",
                        help="the schema of a base spec (no required keys), for editors to use on bases")
        sc.add_argument("--attestation", action="store_true",
                        help="print the schema of manifest.json's `attestation` object instead")
    if only in (None, "targets"):
        t = command("targets", "list installed targets")
        t.add_argument("--format", choices=("text", "json"), default="text",
                       help="text, or JSON (name, summary, built by default)")
    if only in (None, "probe"):
        pr = command("probe", "write a host profile of this host (or of recorded "
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
    if only in (None, "completion"):
        comp = command("completion", "print a shell completion script")
        comp.add_argument("shell", choices=("bash", "zsh", "fish"))
    if only in (None, "init"):
        from .review.scaffold import MECHANISM_TITLES
        i = command("init", "write a valid, commented spec to start from")
        i.add_argument("name", metavar="NAME", help="the guest's name ([guest] name)")
        i.add_argument("--mechanism", "-m", required=True, choices=tuple(MECHANISM_TITLES),
                       help="the confidential-computing mechanism")
        i.add_argument("-o", "--output", metavar="FILE", help="where to write (default: NAME.toml; "
                       "- for stdout); an existing file is never overwritten")
    return p


def _with_output_options(cmd, default) -> None:
    """--color and -q/-v, accepted before or after the command (default SUPPRESS keeps a
    value given before the command when the command's parser does not see one)."""
    cmd.add_argument("--color", choices=("auto", "always", "never"), default=default,
                     help="colour diagnostics: auto (a terminal, unless NO_COLOR is set), "
                          "always, never")
    quiet = cmd.add_mutually_exclusive_group()
    quiet.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity",
                       default=default, help="diagnostics only: no summary or notes")
    quiet.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                       default=default, help="also say what was found for every guest "
                       "(validate, check)")


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes, not {text!r}")
    return int(text)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP while a command runs: what it was doing is undone (a
    build's staging removed, the output left as it was) and it exits with 128 + the
    signal; after a build's commit, 0 (see _interrupted)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_ARMED: List[bool] = []   # a signal now raises Interrupted (else it is noted in _NOTED)
_NOTED: List[int] = []


def _on_signal(signum, _frame):
    if _ARMED:
        _ARMED.clear()   # once: a second signal must not interrupt the cleanup of the first
        raise Interrupted(signum)
    _NOTED.append(signum)


def main(argv: Optional[Sequence[str]] = None, restore: bool = True) -> int:
    """The command line. SIGINT, SIGTERM and SIGHUP raise Interrupted while the command
    runs; one that comes just before or after it is noted and reported the same way, so
    no signal ends cgsc with a traceback or without its word. `restore`: put the caller's
    handlers back (the console script exits instead, with them still noting)."""
    import signal
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    _ARMED.clear()
    _NOTED.clear()
    outdir = sys.modules.get(f"{__package__}.output.outdir")   # loaded by an earlier command
    if outdir is not None:
        outdir.installed(forget=True)   # of this process: its build is not this one
    try:
        previous = [signal.signal(s, _on_signal) for s in caught]
    except ValueError:   # not the main thread: the caller keeps its own handlers
        previous = []
    build = list(sys.argv[1:] if argv is None else argv)[:1] == ["build"]
    try:
        try:
            _ARMED.append(True)
            if _NOTED:   # it came while the handlers were being put in place
                _on_signal(_NOTED.pop(), None)
            code = _main(argv)
        except KeyboardInterrupt as exc:   # one that came while another outcome was said
            _ARMED.clear()
            code = _interrupted(exc, build)
        _ARMED.clear()
        if _NOTED:   # after the command: what it did stands; the signal is said too
            code = _interrupted(Interrupted(_NOTED[0]), build) if code == EXIT_OK else code
        return code
    finally:
        _ARMED.clear()
        for signum, handler in zip(caught, previous) if restore else ():
            signal.signal(signum, handler)


def _main(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    from .spec.paths import forget
    forget()  # repositories found by an earlier command in this process may have moved
    fmt = "text"
    try:
        args = parser(argv[0] if argv and argv[0] in _COMMANDS else None).parse_args(argv)
        if args.command is None:
            parser().print_help(sys.stderr)
            return EXIT_USAGE
        fmt = getattr(args, "format", "text")
        _DIAGNOSTICS_TO_STDERR[:] = [True] if getattr(args, "stdout", False) else []
        _STYLE.update(verbosity=getattr(args, "verbosity", 0),
                      colour=_colour(getattr(args, "color", "auto")))
        _known_targets(getattr(args, "target", ()))
        _listed_specs(args)
        from .core.filecache import session
        with session():   # each boot file is read once per command, however many guests
            return _COMMANDS[args.command](args)
    except _Usage as exc:
        print(f"cgsc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except SpecError as exc:
        _report(exc.diagnostics, fmt, failed=True)
        return EXIT_INVALID
    except KeyboardInterrupt as exc:
        _ARMED.clear()
        return _interrupted(exc, argv[:1] == ["build"])
    except BrokenPipeError:  # `cgsc rules | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except _OutputLost as exc:
        return _output_lost(exc)
    except (OSError, MemoryError, ImportError) as exc:
        found = resource_error(exc)
        if found is None:
            return _bug(exc, debug)
        print(f"cgsc: {found}; nothing written", file=sys.stderr)   # once, not per spec
        return EXIT_USAGE
    except Exception as exc:  # the one place a bug is caught
        return _bug(exc, debug)


def _interrupted(exc: KeyboardInterrupt, build: bool) -> int:
    """The exit status says what happened: 128 + the signal when nothing was installed
    (the output is as it was); 0 when the signal came after a build's commit (the output
    is the new build, whole), with a note that says so."""
    import signal
    signum = getattr(exc, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    done = None
    if build:
        from .output.outdir import installed
        done = installed()
    if done:
        print(f"cgsc: {name} arrived after the build was installed in {done}/; it is "
              "complete, nothing was left half-written", file=sys.stderr)
        return EXIT_OK
    print(f"cgsc: interrupted ({name}); nothing written", file=sys.stderr)
    return 128 + signum


def _bug(exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    else:
        print(_bug_message(exc), file=sys.stderr)
    return EXIT_BUG


def run() -> None:
    """The console script: main(), then exit without tearing the interpreter down. Freeing
    a fleet build's modules and objects one by one costs 10-20 ms and gives the kernel
    nothing it would not take back anyway; the standard streams are flushed first."""
    _standard_streams()
    code = main(restore=False)
    try:
        sys.stdout.flush()
    except BrokenPipeError:   # the reader left before the last line
        code = code or 141
    except _OutputLost as exc:
        code = _output_lost(exc)
    sys.stderr.flush()
    os._exit(code)


class _OutputLost(Exception):
    """Standard output cannot be written (a full disk, an I/O error): what the command
    prints there (artifacts, a JSON report) is lost, so it fails, whatever it found."""


class _Stream:
    """A standard stream of the console script. Writing to stdout can fail (_OutputLost,
    exit 2); writing to stderr cannot: a diagnostic with nowhere to go is dropped, the
    exit status still says what happened. A reader that left is BrokenPipeError, as ever."""

    def __init__(self, stream, name: str):
        self._stream, self._name = stream, name

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if self._name == "stdout":
                raise _OutputLost(exc.strerror or str(exc)) from None
            return None

    def write(self, text: str):
        written = self._guarded(self._stream.write, text)
        return len(text) if written is None else written

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _output_lost(exc: _OutputLost) -> int:
    print(f"cgsc: cannot write the standard output: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _standard_streams() -> None:
    """Descriptors 0-2 open, to /dev/null where the caller closed one (`cgsc build >&-`):
    a file cgsc opens must never become its stdin, stdout or stderr, and a diagnostic with
    nowhere to go must not turn into an internal error; the exit status still says what
    happened. Then stdout and stderr fail as _Stream says."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)   # the lowest free descriptor: this one
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:   # Python found the descriptor closed at start
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))
    sys.stdout, sys.stderr = _Stream(sys.stdout, "stdout"), _Stream(sys.stderr, "stderr")


def _bug_message(exc: BaseException, where: str = "") -> str:
    return (f"cgsc: {where}internal error ({type(exc).__name__}: {printable(str(exc))}). "
            "This is a bug; please report it with the spec and `cgsc --debug` output.")


_DIAGNOSTICS_TO_STDERR = []   # set by `build --stdout`: stdout carries the artifacts only
_STYLE = {"verbosity": 0, "colour": False}   # -q (-1) / -v (1); colour on stderr


def _colour(when: str) -> bool:
    """--color: always, never, or auto: stderr is a terminal, NO_COLOR is unset or empty
    (no-color.org) and TERM is not dumb. The option overrides NO_COLOR."""
    if when != "auto":
        return when == "always"
    return (not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
            and sys.stderr.isatty())


def _say(text: str) -> None:
    """A summary or a note on stderr; -q leaves it out."""
    if _STYLE["verbosity"] >= 0:
        print(text, file=sys.stderr)


def _report(diagnostics: List[Diagnostic], fmt: str, failed: bool = False) -> None:
    """Text goes to stderr with a summary line; machine formats go to stdout, whole
    (to stderr under `build --stdout`, whose stdout is the artifacts)."""
    from .review.report import RENDER
    if fmt != "text":
        (sys.stderr if _DIAGNOSTICS_TO_STDERR else sys.stdout).write(RENDER[fmt](diagnostics))
        return
    text = RENDER["text"](diagnostics)
    if _STYLE["colour"]:
        from .review.report import coloured
        text = coloured(text)
    sys.stderr.write(text)
    if failed:
        errors = sum(1 for d in diagnostics if d.severity == "error")
        _say(f"cgsc: {errors} error{'s' if errors != 1 else ''}; nothing written")


def _host(args):
    """The --host profile, or None; an unusable one is a usage error."""
    if not getattr(args, "host", None):
        return None
    from .host.profile import ProfileError, load
    try:
        return load(args.host)
    except ProfileError as exc:
        raise _Usage(str(exc)) from None


def _floating_note(args, first, count: int) -> None:
    """Without --host, say once per run that the machine type floats (text output only:
    the machine formats carry the spec's own diagnostics). `first`: (a locate function or
    a build.Where, machine type) of the first guest whose machine floats; `count` of all."""
    from .host.compat import FLOATING_MACHINE
    if args.format != "text" or first is None:
        return
    where, machine = first
    if not callable(where):
        from .pipeline.build import locator
        where = locator(where)
    more = f" (and in {count - 1} more spec(s))" if count > 1 else ""
    if args.host:   # a profile that does not know what its QEMU resolves the alias to
        d = where(FLOATING_MACHINE.warning(
            ("guest", "machine"), f"{machine!r} floats{more}: host profile {printable(args.host)} "
            "does not say which machine its QEMU resolves it to",
            "make the profile on the host (`cgsc probe -o host.json`), or write a versioned "
            "machine in [guest] machine"))
    else:
        d = where(FLOATING_MACHINE.warning(("guest", "machine"), f"{machine!r} floats{more}",
                                           "pin it with --host HOST.json (`cgsc probe`)"))
    _report([d], "text")


def _floating(outputs) -> tuple:
    """(first, count) for _floating_note, from in-memory GuestOutputs."""
    from .host.profile import is_floating
    floating = [(o.locate, o.machine) for o in outputs if is_floating(o.machine)]
    return (floating[0] if floating else None), len(floating)


def _listed_specs(args) -> None:
    """Add the specs of --specs-from (one path per line, any bytes a file name may have;
    blank lines ignored) to those named; build and validate need at least one. A list
    that cannot be read is a usage error; a line that is no file name, a spec error."""
    where = getattr(args, "specs_from", None)
    if where is not None:
        from .core.inputs import InputError
        from .spec.source import listed
        try:
            args.specs = list(args.specs) + listed(where)
        except InputError as exc:
            raise _Usage(f"--specs-from {shown(exc.path)}: {exc.detail}") from None
    if args.command in ("build", "validate") and not args.specs:
        raise _Usage(f"{args.command}: name SPEC files, or list them with --specs-from FILE "
                     f"(usage: cgsc {args.command} [OPTIONS] SPEC...)")


def _known_targets(names) -> None:
    """An unknown -t is a usage error (exit 2), not a fault of the spec."""
    if not names:
        return
    from . import targets
    unknown = [n for n in names if targets.get(n) is None]
    if unknown:
        raise _Usage(f"unknown target {unknown[0]!r}; installed targets: "
                     + ", ".join(targets.available()))


def _skip_notes(skipped, fmt: str) -> None:
    """A default build that left a target out says which and why (stderr, text format)."""
    if fmt == "text":
        for guest, target, rule, reason in skipped:
            _say(f"cgsc: note: {guest}: target {target} skipped: {reason} [{rule}]")


def _build(args) -> int:
    from .output.emit import WriteError
    host = _host(args)
    if args.stdout and args.prune:
        raise _Usage("build: --prune removes directories under the output directory; "
                     "--stdout writes none")
    if args.stdout:
        from .pipeline.build import build
        outputs = build(args.specs, args.target, host, args.strict)
        _report(once((o.spec, d) for o in outputs for d in o.diagnostics), args.format)
        _floating_note(args, *_floating(outputs))
        _skip_notes([(o.name,) + why for o in outputs for why in o.skipped], args.format)
        many = len(outputs) > 1 or sum(len(o.artifacts) for o in outputs) > 1
        for o in outputs:
            for _target, a in o.artifacts:
                if many:
                    sys.stdout.write(f"==> {o.name}/{a.filename} <==\n")
                sys.stdout.write(a.content)
        return EXIT_OK
    from .output import fleet
    try:
        built = fleet.build(args.specs, args.target, args.output, args.jobs, host, args.strict,
                            args.prune, cache=not args.no_cache)
    except WriteError as exc:
        print(f"cgsc: {exc}; nothing written", file=sys.stderr)
        return EXIT_USAGE
    _report(built.diagnostics, args.format)
    _floating_note(args, *built.floating)
    _skip_notes(built.skipped, args.format)
    if args.format == "text":
        for name in built.pruned:
            _say(f"cgsc: pruned {args.output}/{name}/ (no spec of this build makes it)")
        if built.count == 1:
            names = ", ".join(sorted(name for name, _sha in built.first.files))
            _say(f"cgsc: {args.output}/{built.first.name}/: {names}"
                 + (" (already up to date)" if built.unchanged else ""))
        elif built.unchanged:
            _say(f"cgsc: {built.count} guests under {args.output}/: "
                 f"{built.count - built.unchanged} written, {built.unchanged} already up to date")
        else:
            _say(f"cgsc: {built.count} guests written under {args.output}/"
                 + (f" ({built.abstract} abstract base{'s' if built.abstract != 1 else ''} "
                    "checked, not built)" if built.abstract else ""))
    return EXIT_OK


def _validate(args) -> int:
    """Each spec on its own: one invalid or crashing spec never hides another's diagnostics,
    and through build's own code path, so validate refuses exactly what build would. The
    exit status is the worst of all specs (an internal error in one is 3)."""
    from .pipeline.build import build, conflicts
    problems, warnings, crashed, outputs = [], [], [], []
    host, bases = _host(args), 0
    for spec in args.specs:
        try:
            if args.base:
                from .spec.base import check_base
                found = check_base(spec)
                if found:
                    raise SpecError(found)
            else:
                built = build([spec], args.target, host, args.strict)
                bases += not built   # an abstract base, checked as one
                outputs += built
                warnings += [(spec, d) for o in built for d in o.diagnostics]
        except SpecError as exc:
            problems += [(spec, d) for d in exc.diagnostics]
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:  # a bug, reported for this spec; the others still count
            if resource_error(exc) is not None:
                raise   # the machine's problem, not this spec's: once, for the command
            if args.debug:
                import traceback
                traceback.print_exc()
            crashed.append(spec)
            print(_bug_message(exc, f"{printable(spec)}: "), file=sys.stderr)
    problems += conflicts(outputs)   # what build refuses across specs
    if problems:
        _report(sorted(once(problems + warnings), key=sort_key), args.format, failed=True)
        return EXIT_BUG if crashed else EXIT_INVALID
    _report(once(warnings), args.format)
    _floating_note(args, *_floating(outputs))
    if crashed:
        return EXIT_BUG
    if args.format == "text":
        if _STYLE["verbosity"] > 0:
            for o in outputs:
                _say(f"cgsc: {printable(o.spec)}: {o.name} valid "
                     f"({', '.join(t for t, _a in o.artifacts)})")
        bases = f" ({bases} abstract base{'s' if bases != 1 else ''})" if bases else ""
        _say(f"cgsc: {len(args.specs)} {'base ' if args.base else ''}"
             f"spec{'s' if len(args.specs) != 1 else ''} valid{bases}")
    return EXIT_OK


def _check(args) -> int:
    from .output import fleet
    from .output.drift import gather, leftovers, renamed
    from .output.emit import WriteError
    if not args.specs and not args.all:
        raise _Usage("check: name SPEC files, or --all for every guest under the output directory")
    scan = args.all and os.path.isdir(args.output)
    if args.all and not scan and not args.specs:   # nothing to compare is not "up to date"
        raise _Usage(f"check --all: no output directory {args.output}/ to check "
                     "(build first, or name it with -o DIR)")
    from .output.outdir import shared_lock
    lock = shared_lock(args.output)   # the scan never sees a build half done (-1: no OUT)
    try:
        try:   # (specs named with --all and no output directory: each reports its missing files)
            groups, homes, orphans = gather(args.specs, args.output, args.target, scan,
                                            args.jobs)
            orphans += leftovers(args.output) if lock >= 0 else []
        except OSError as exc:
            raise _Usage(f"check{' --all' if args.all else ''}: cannot list {args.output}/: "
                         f"{exc.strerror or exc}") from None
        try:
            outputs = fleet.check(groups, args.output, args.jobs, _host(args), args.strict,
                                  cache=not args.no_cache)
        except WriteError as exc:   # a worker died: no verdict on anything
            print(f"cgsc: {exc}; nothing checked", file=sys.stderr)
            return EXIT_USAGE
    finally:
        if lock >= 0:
            os.close(lock)
    orphans += renamed(outputs, homes)
    from .review.drift_report import orphan, text
    findings = [orphan(d) for d in orphans] + once((o.path, d) for o in outputs for d in o.diagnostics)
    if args.format != "text":
        _report(findings, args.format)
    else:
        out, shown, lines = text(findings, outputs, orphans, args.output, args.diff)
        sys.stdout.write(out)
        _report(shown, "text")
        if _STYLE["verbosity"] > 0:
            for o in outputs:
                _say(f"cgsc: {o.name}: {'out of date' if o.drifts else 'up to date'}")
        for line in lines:
            _say(line)
    return EXIT_INVALID if orphans or any(o.drifts for o in outputs) else EXIT_OK


def _probe(args) -> int:
    import json

    from .host.probe import from_domcapabilities, probe
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
        from .host.probe import write
        try:
            write(args.output, text)
        except OSError as exc:
            print(f"cgsc: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        for note in profile.get("unreadable", []):
            print(f"cgsc probe: could not read {note}", file=sys.stderr)
        if (profile.get("sev") or {}).get("present") is False:
            print(f"cgsc probe: SEV: not present ({profile['sev'].get('why', '')})", file=sys.stderr)
        print(f"cgsc probe: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _is_rule_id(text: str) -> bool:
    import re
    return re.fullmatch(r"CGS-[A-Z0-9]+-[0-9]{3}", text.upper()) is not None and \
        not os.path.exists(text)


def _explain(args) -> int:
    if all(_is_rule_id(a) for a in args.specs):
        for i, rule_id in enumerate(args.specs):
            if i:
                print()
            args.rule = rule_id
            _rules(args)
        return EXIT_OK
    from .review.explain import explain, to_json, to_text
    from .spec.base import AbstractSpec
    infos, problems = [], []
    for spec in args.specs:
        try:
            infos.append(explain(spec))
        except SpecError as exc:
            problems += exc.diagnostics
        except AbstractSpec:
            raise _Usage(f"explain: {printable(spec)} is an abstract base (abstract = true), "
                         "not a guest: explain a spec that extends it") from None
    if problems:
        raise SpecError(problems)
    if args.format == "json":
        sys.stdout.write(to_json(infos[0] if len(infos) == 1 else infos))
    else:
        sys.stdout.write("\n".join(to_text(info) for info in infos))
    return EXIT_OK


def _diff(args) -> int:
    from .review.diff import RevisionError, diff_against, diff_specs
    from .review.diff_report import RENDER, report
    if args.base is None and len(args.specs) != 2:
        raise _Usage("diff: name two specs (OLD NEW), or --base REV and the specs to compare")
    try:
        diffs = diff_against(args.base, args.specs) if args.base is not None else diff_specs(*args.specs)
    except RevisionError as exc:
        raise _Usage(f"diff: {exc}") from None
    sys.stdout.write(RENDER[args.format](report(diffs, args.base)))
    return EXIT_OK


def _verify(args) -> int:
    from .review import verify as v
    try:
        verdict = v.verify(args.report, args.guest or args.manifest)
    except v.UsageProblem as exc:
        print(f"cgsc verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "text":
        out, err = v.to_text(verdict)
        sys.stdout.write(out)
        sys.stderr.write(err)
    else:
        sys.stdout.write(v.to_json(verdict) if args.format == "json" else v.to_sarif(verdict))
    return EXIT_OK if verdict.ok else EXIT_INVALID


def _rules(args) -> int:
    from .core.rules import load_all
    from .review.report import rule_help, rule_record
    catalogue = load_all()
    as_json = getattr(args, "format", "text") == "json"
    if args.rule:
        rule = catalogue.get(args.rule.upper())
        if rule is None:
            raise _Usage(f"no rule {printable(args.rule)} (`cgsc rules` lists them)")
        print(_json(rule_record(rule)) if as_json else rule_help(rule))
        return EXIT_OK
    if as_json:
        print(_json([rule_record(catalogue[r]) for r in sorted(catalogue)]))
        return EXIT_OK
    for rule_id in sorted(catalogue):
        rule = catalogue[rule_id]
        print(f"{rule_id:16} {rule.severity:8} {rule.summary}")
    return EXIT_OK


def _json(value) -> str:
    import json
    return json.dumps(value, indent=2)


def _schema(args) -> int:
    if getattr(args, "attestation", False):
        from .measure.record import schema_text
        sys.stdout.write(schema_text())
        return EXIT_OK
    from .spec.schema import dumps
    sys.stdout.write(dumps(base=args.base))
    return EXIT_OK


def _targets(args) -> int:
    from . import targets
    if args.format == "json":
        print(_json([{"name": name, "summary": summary, "default": name in targets.BUILTIN}
                     for name, summary in targets.available().items()]))
        return EXIT_OK
    for name, summary in targets.available().items():
        print(f"{name:10} {summary}")
    return EXIT_OK


def _init(args) -> int:
    """A valid, commented spec for the mechanism; never over an existing file."""
    import re

    from .review.scaffold import spec_text
    from .spec.schema import read
    pattern = read("guest.schema.json")["$defs"]["guest"]["properties"]["name"]["pattern"]
    if not re.fullmatch(pattern.strip("^$"), args.name) or ".." in args.name:
        raise _Usage(f"init: {printable(args.name)!s} is not a guest name (lowercase letters, "
                     "digits, '_', '.', '-'; 1-63 characters, starting with a letter or digit)")
    text = spec_text(args.mechanism, args.name)
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = args.output or f"{args.name}.toml"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise _Usage(f"init: {printable(path)} exists; cgsc init never overwrites a file "
                     "(choose another with -o FILE)") from None
    except OSError as exc:
        raise _Usage(f"init: cannot create {printable(path)}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    _say(f"cgsc: wrote {printable(path)}; next: cgsc validate {printable(path)}")
    return EXIT_OK


def _completion(args) -> int:
    from .review.completion import script
    sys.stdout.write(script(parser(), args.shell))
    return EXIT_OK


_COMMANDS = {"build": _build, "validate": _validate, "check": _check, "explain": _explain,
             "diff": _diff, "probe": _probe, "verify": _verify,
             "rules": _rules, "schema": _schema, "targets": _targets, "completion": _completion,
             "init": _init}
