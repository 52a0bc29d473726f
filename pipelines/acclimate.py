"""`python pipelines/acclimate.py [--config FILE] [key=value ...]` = `depthkd acclimate`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["acclimate", *sys.argv[1:]]))
