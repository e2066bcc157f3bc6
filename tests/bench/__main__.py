"""``python -m tests.bench``: run the benchmark (see tests/bench/README.md)."""

from __future__ import annotations

import sys

from tests.bench.run import main

sys.exit(main())
