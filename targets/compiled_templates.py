"""Templates compiled ahead of time, shipped as ordinary modules of this package.

Compiling the two Jinja templates costs more than the rest of a one-spec build, and a
runtime cache of compiled templates is code read from a directory someone else may be
able to write (issue 12). So the compiled form lives in `_generated/<name>.py`, written
by `python -m cgsc.regenerate` (template_compiler.py) and loaded like any other module of
the package. Each carries a key over the template source, the Jinja2
version and the environment's syntax options; a module whose key does not match the
template as it is now is never used: the template is compiled from source instead, so
stale code cannot run (a test keeps the shipped modules current).
"""

from __future__ import annotations

import hashlib
import importlib
import os

TEMPLATES = ("launch.sh.j2", "unit.service.j2")
HERE = os.path.dirname(os.path.abspath(__file__))


def module_name(template: str) -> str:
    return template.rsplit(".", 1)[0].replace(".", "_").replace("-", "_")


def source_of(template: str) -> str:
    with open(os.path.join(HERE, "templates", template), encoding="utf-8") as fh:
        return fh.read()


def key(env, template: str, source: str) -> str:
    """What the compiled code depends on: the source, Jinja2 itself, the lexer options."""
    import jinja2
    options = (jinja2.__version__, env.block_start_string, env.block_end_string,
               env.variable_start_string, env.variable_end_string, env.comment_start_string,
               env.comment_end_string, env.line_statement_prefix, env.line_comment_prefix,
               env.trim_blocks, env.lstrip_blocks, env.newline_sequence,
               env.keep_trailing_newline, bool(env.autoescape), env.optimized)
    return hashlib.sha256(repr((template, options, source)).encode("utf-8")).hexdigest()


def load(env, template: str):
    """The template from its shipped compiled module when that is current, else compiled
    from source now."""
    source = source_of(template)
    try:
        module = importlib.import_module(f"{__package__}._generated.{module_name(template)}")
    except ImportError:
        module = None
    if module is not None and getattr(module, "CGSC_TEMPLATE_KEY", None) == key(env, template, source):
        return env.template_class.from_module_dict(env, vars(module), env.make_globals(None))
    code = env.compile(source, template, os.path.join(HERE, "templates", template))
    return env.template_class.from_code(env, code, env.make_globals(None))
