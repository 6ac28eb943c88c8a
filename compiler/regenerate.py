"""`python -m cgsc.regenerate`: rewrite everything generated from its source: the
package's generated modules (the compiled schema check, the compiled templates) and, in a
checkout, the generated docs (docs/reference/keys.md from the schema, rules.md from the
rules). Run it after editing the schema, a template, a rule or the code that compiles
them; a test fails while anything generated is stale."""

from __future__ import annotations

import sys


def main() -> int:
    from .review import reference
    from .spec import schema_compiler
    from .targets import template_compiler
    for generator in (schema_compiler.main, template_compiler.main, reference.main):
        status = generator()
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
