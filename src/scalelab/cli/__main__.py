"""`python -m scalelab.cli ...`: the `scalelab` command."""

import sys

from scalelab.cli import main

sys.exit(main())
