"""`{name}`: a base spec's per-guest values.

A base spec says `{name}` in a string value (a disk path, a socket, a console log, a tap
interface, a label) and every guest that extends it gets its own name there, so that such
values need not be repeated in every child. `{name}` is the only placeholder: a guest's
values depend on its own spec and its chain only, so adding a guest never changes another
guest's artifacts. The values are replaced before the spec is validated (an expanded
value is checked as if written out), and keep the line of the file that said them.
"""

from __future__ import annotations

PLACEHOLDER = "{name}"
SAMPLE = "name"   # a valid guest name, for checking a base on its own (`validate --base`)
_NAME = ("guest", "name")


def expand(value, name: str, path: tuple = ()):
    """`value` (a spec's data) with `{name}` in every string value replaced by `name`;
    [guest] name itself, and table keys, are left as they are."""
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, name) if PLACEHOLDER in value else value
    if isinstance(value, dict):
        return {k: v if path + (k,) == _NAME else expand(v, name, path + (k,))
                for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, name, path) for v in value]
    return value
