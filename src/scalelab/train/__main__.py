"""`python -m scalelab.train CONFIG --out RUN [key=value ...]`: the `scalelab train` command, as a module
torchrun can launch: `torchrun --nproc-per-node K -m scalelab.train CONFIG --out RUN`."""

import sys

from scalelab.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
