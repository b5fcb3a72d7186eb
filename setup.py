"""Only the optional C accelerator is declared here; everything else is in pyproject.toml.

``optional=True``: without a C compiler (or Python headers) the build goes on without it, and
pricefeed runs its pure-Python paths, which the test suite covers too.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("pricefeed._protocol._speedups", ["pricefeed/_protocol/_speedups.c"], optional=True, extra_compile_args=["-O2", "-std=c11"])
    ]
)
