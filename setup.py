"""The one thing pyproject.toml cannot say on every setuptools >= 64: the optional compiled
stat loop of the incremental cache (compiler/output/_stats.c). Without a C compiler the
build goes on without it and cgsc.output.stats does the same in Python (same results)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("cgsc.output._stats", ["compiler/output/_stats.c"],
                             optional=True, extra_compile_args=["-O2"])])
