"""`python pipelines/pseudo_label.py --teacher REF --shards LOCATION --split NAME --out DIR
[--size H W] [--batch-size B] [--concurrency N] [--force]` = `depthkd pseudo-label`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["pseudo-label", *sys.argv[1:]]))
