"""`python pipelines/cross_distill.py [--config FILE] [key=value ...]` = `depthkd cross-distill`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["cross-distill", *sys.argv[1:]]))
