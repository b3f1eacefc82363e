"""``python -m lrbatch``: the same as the ``lrbatch`` command (worker processes start this way)."""

import sys

from lrbatch.cli import main

sys.exit(main())
