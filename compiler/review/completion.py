"""Shell completion scripts (bash, zsh, fish), generated from the argparse parser.

Option values come from the parser's choices (`--format`), the installed targets
(`-t`) and the rule catalogue (`cgsc rules <TAB>`), as known when the script is made;
options that take a path complete files (directories for `-o`), spec arguments files.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, NamedTuple, Tuple

SHELLS = ("bash", "zsh", "fish")


class Command(NamedTuple):
    name: str
    help: str
    options: Tuple[Tuple[str, ...], ...]          # option strings of each option
    values: Dict[str, Tuple[str, ...]]            # option string -> fixed values
    takes_value: Tuple[str, ...]                  # option strings followed by a value
    dirs: Tuple[str, ...]                         # option strings followed by a directory
    revs: Tuple[str, ...]                         # option strings followed by a git revision
    positional: Tuple[str, ...]                   # fixed positional values; () = files


def _values(cmd_name: str, action: argparse.Action) -> Tuple[str, ...]:
    if action.choices:
        return tuple(action.choices)
    if action.dest == "target":
        from .. import targets
        return tuple(targets.available())
    if cmd_name == "rules" and action.dest == "rule":
        from ..core.rules import load_all
        return tuple(sorted(load_all()))
    return ()


def commands(parser: argparse.ArgumentParser) -> List[Command]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    out = []
    for name, cmd in sub.choices.items():
        options, values, takes, dirs, revs, positional = [], {}, [], [], [], ()
        for action in cmd._actions:
            if not action.option_strings:
                positional = _values(name, action)
                continue
            strings = tuple(o for o in action.option_strings if o not in ("-h",))
            options.append(strings)
            if action.nargs != 0:
                takes += strings
                fixed = _values(name, action)
                for o in strings:
                    if fixed:
                        values[o] = fixed
                    elif action.dest == "output":
                        dirs.append(o)
                    elif action.metavar == "REV":
                        revs.append(o)
        out.append(Command(name, helps.get(name, ""), tuple(options), values, tuple(takes),
                           tuple(dirs), tuple(revs), positional))
    return out


def _words(items) -> str:
    return " ".join(items)


def _bash(cmds: List[Command]) -> str:
    names = _words(c.name for c in cmds)
    cases = []
    for c in cmds:
        opts = _words(o for strings in c.options for o in strings)
        prev = "".join(f"\n                {o}) mapfile -t COMPREPLY < <(compgen -W '{_words(v)}' -- \"$cur\"); return ;;"
                       for o, v in c.values.items())
        prev += "".join(f"\n                {o}) compopt -o filenames; mapfile -t COMPREPLY < <(compgen -d -- \"$cur\"); return ;;"
                        for o in c.dirs)
        prev += "".join(f"\n                {o}) mapfile -t COMPREPLY < <(compgen -W \"$(git for-each-ref --format='%(refname:short)' 2>/dev/null)\" -- \"$cur\"); return ;;"
                        for o in c.revs)
        other = [o for o in c.takes_value if o not in c.values and o not in c.dirs and o not in c.revs]
        if other:
            prev += f"\n                {'|'.join(other)}) compopt -o filenames; mapfile -t COMPREPLY < <(compgen -f -- \"$cur\"); return ;;"
        words = (f"mapfile -t COMPREPLY < <(compgen -W '{_words(c.positional)}' -- \"$cur\")"
                 if c.positional else
                 "compopt -o filenames; mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")")
        cases.append(f"""        {c.name})
            case $prev in{prev}
            esac
            if [[ $cur == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W '{opts}' -- "$cur")
            else
                {words}
            fi ;;""")
    body = "\n".join(cases)
    return f"""# bash completion for cgsc; install: cgsc completion bash > /etc/bash_completion.d/cgsc
_cgsc() {{
    local cur prev cmd
    cur=${{COMP_WORDS[COMP_CWORD]}}
    prev=${{COMP_WORDS[COMP_CWORD-1]}}
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "{names} --version --debug --help" -- "$cur")
        return
    fi
    cmd=${{COMP_WORDS[1]}}
    case $cmd in
{body}
    esac
}}
complete -F _cgsc cgsc
"""


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh(cmds: List[Command]) -> str:
    names = " ".join(_zsh_quote(f"{c.name}:{c.help}") for c in cmds)
    cases = []
    for c in cmds:
        specs = []
        for strings in c.options:
            takes = strings[0] in c.takes_value
            action = ""
            if takes:
                fixed = c.values.get(strings[0])
                action = (f":value:({' '.join(fixed)})" if fixed else
                          ":directory:_directories" if strings[0] in c.dirs else
                          ":revision: " if strings[0] in c.revs else ":file:_files")
            group = "(" + " ".join(strings) + ")" if len(strings) > 1 else ""
            brace = "{" + ",".join(strings) + "}" if len(strings) > 1 else strings[0]
            repeat = "*" if "-t" in strings else ""
            specs.append(f"'{repeat}{group}'{brace}'{action}'" if group else f"'{repeat}{brace}{action}'")
        rest = (f"'*:value:({' '.join(c.positional)})'" if c.positional else "'*:spec:_files'")
        cases.append(f"        {c.name}) _arguments {' '.join(specs)} {rest} ;;")
    body = "\n".join(cases)
    return f"""#compdef cgsc
# zsh completion for cgsc; install: cgsc completion zsh > "${{fpath[1]}}/_cgsc"
_cgsc() {{
    local -a cmds
    cmds=({names})
    if (( CURRENT == 2 )); then
        _describe command cmds
        compadd -- --version --debug --help
        return
    fi
    shift words; (( CURRENT-- ))
    case $words[1] in
{body}
    esac
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _cgsc "$@"
else
    compdef _cgsc cgsc
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(cmds: List[Command]) -> str:
    names = " ".join(c.name for c in cmds)
    lines = ["# fish completion for cgsc; install: cgsc completion fish > ~/.config/fish/completions/cgsc.fish",
             "complete -c cgsc -f",
             f"complete -c cgsc -n 'not __fish_seen_subcommand_from {names}' -l version -d 'print the version'",
             f"complete -c cgsc -n 'not __fish_seen_subcommand_from {names}' -l debug -d 'show tracebacks of internal errors'"]
    for c in cmds:
        lines.append(f"complete -c cgsc -n 'not __fish_seen_subcommand_from {names}' -a {c.name} "
                     f"-d {_fish_quote(c.help)}")
        when = f"-n '__fish_seen_subcommand_from {c.name}'"
        for strings in c.options:
            flags = " ".join(f"-l {o[2:]}" if o.startswith("--") else f"-s {o[1:]}" for o in strings)
            takes = strings[0] in c.takes_value
            fixed = c.values.get(strings[0])
            extra = (f" -x -a {_fish_quote(' '.join(fixed))}" if fixed else
                     " -r -a '(__fish_complete_directories)'" if strings[0] in c.dirs else
                     " -x -a \"(git for-each-ref --format='%(refname:short)' 2>/dev/null)\""
                     if strings[0] in c.revs else
                     " -r -F" if takes else "")
            lines.append(f"complete -c cgsc {when} {flags}{extra}")
        if c.positional:
            lines.append(f"complete -c cgsc {when} -x -a {_fish_quote(' '.join(c.positional))}")
        elif c.name in ("build", "validate", "check", "explain", "diff"):
            lines.append(f"complete -c cgsc {when} -F")
    return "\n".join(lines) + "\n"


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](commands(parser))
