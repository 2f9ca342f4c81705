"""`python -m scalelab.cli ...`: the `scalelab` command."""

import sys

from scalelab.cli import main

if __name__ == "__main__":
    sys.exit(main())
