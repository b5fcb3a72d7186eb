#!/usr/bin/env python3
"""The pricefeed benchmark: ``python scripts/bench.py [--quick] [--json PATH] [--plot DIR]``.

The same as ``pricefeed bench``; the harness itself is ``pricefeed/_bench`` (see run.py there
for how to read its output). This file lets a checkout run it without installing the command.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's pricefeed

from pricefeed._bench.run import main

if __name__ == "__main__":
    sys.exit(main())
