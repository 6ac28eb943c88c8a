"""`python -m cgsc.regenerate`: rewrite every generated module of the package (the
compiled schema check, the compiled templates) from its source. Run it after editing
the schema, a template or the code that compiles them; a test fails while any generated
module is stale."""

from __future__ import annotations

import sys


def main() -> int:
    from .spec import schema_compiler
    from .targets import template_compiler
    for generator in (schema_compiler.main, template_compiler.main):
        status = generator()
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
