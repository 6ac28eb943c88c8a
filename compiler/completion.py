"""Shell completion scripts, generated from the argparse parser (no extra dependency)."""

from __future__ import annotations

import argparse
from typing import Dict, List


def _commands(parser: argparse.ArgumentParser) -> Dict[str, List[str]]:
    """subcommand -> its options (and fixed choices)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, cmd in sub.choices.items():
        words = []
        for action in cmd._actions:
            words += [o for o in action.option_strings if o.startswith("--") or len(o) == 2]
            if action.choices and not action.option_strings:
                words += list(action.choices)
        out[name] = sorted(set(words) - {"-h"})
    return out


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    commands = _commands(parser)
    globals_ = "--version --debug --help"
    if shell == "bash":
        cases = "\n".join(f"        {name}) opts={' '.join(words)!r} ;;" for name, words in commands.items())
        return f"""# bash completion for cgsc; install: cgsc completion bash > /etc/bash_completion.d/cgsc
_cgsc() {{
    local cur cmd opts
    cur=${{COMP_WORDS[COMP_CWORD]}}
    cmd=${{COMP_WORDS[1]}}
    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "{' '.join(commands)} {globals_}" -- "$cur")
        return
    fi
    case $cmd in
{cases}
        *) opts="" ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -W "$opts" -f -- "$cur")
    fi
}}
complete -F _cgsc cgsc
"""
    cases = "\n".join(f"        {name}) opts=({' '.join(words)}) ;;" for name, words in commands.items())
    return f"""#compdef cgsc
# zsh completion for cgsc; install: cgsc completion zsh > "${{fpath[1]}}/_cgsc"
_cgsc() {{
    local -a opts
    if (( CURRENT == 2 )); then
        compadd -- {' '.join(commands)} {globals_}
        return
    fi
    case $words[2] in
{cases}
    esac
    if [[ $PREFIX == -* ]]; then
        compadd -- $opts
    else
        _files
    fi
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _cgsc "$@"
else
    compdef _cgsc cgsc
fi
"""
