"""Only the optional C accelerator is declared here; everything else is in pyproject.toml.

``optional=True``: without a C compiler (or Python headers) the build goes on without it, and
pricefeed runs its pure-Python paths, which the test suite covers too.

The accelerator is thin bindings over the protocol's C core in ``clients/c/core/`` (the same
code ``clients/c/pricefeed.h`` is generated from), found relative to this file so that both
``pip install .`` and ``pip install -e .`` from a checkout, and a build from the sdist
(MANIFEST.in ships the core), compile it.
"""

import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join("clients", "c", "core")

setup(
    ext_modules=[
        Extension(
            "pricefeed._protocol._speedups",
            ["pricefeed/_protocol/_speedups.c"],
            include_dirs=[os.path.join(HERE, CORE)],
            depends=sorted(os.path.join(CORE, name) for name in os.listdir(os.path.join(HERE, CORE)))
            if os.path.isdir(os.path.join(HERE, CORE))
            else [],
            optional=True,
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
