"""cgsc: the Confidential Guest Spec Compiler.

The public Python API (docs/api.md), loaded on first use so that `import cgsc` (and the
command line's start) stays cheap:

    import cgsc
    result = cgsc.validate("guests/payments-db.toml")
    for d in result.diagnostics:
        print(d.render())
    built = cgsc.build("guests/payments-db.toml", targets=["shell"])
    print(built.files["payments-db.sh"])
"""

__version__ = "1.0.0"

__all__ = ["load", "validate", "build", "Loaded", "Validated", "Built", "Diagnostic",
           "EnvironmentProblem", "__version__"]


def __getattr__(name):
    """The API on first use (PEP 562), by name like the registries: the package module is
    the top layer, and its stages import `__version__` from it."""
    import importlib
    if name in ("load", "validate", "build", "Loaded", "Validated", "Built",
                "EnvironmentProblem"):
        return getattr(importlib.import_module(__name__ + ".api"), name)
    if name == "Diagnostic":
        return importlib.import_module(__name__ + ".core.diagnostics").Diagnostic
    raise AttributeError(f"module 'cgsc' has no attribute {name!r}")
