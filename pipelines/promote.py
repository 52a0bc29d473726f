"""`python pipelines/promote.py [--candidate REF] [--dry-run] [--config FILE] [key=value ...]`
= `depthkd promote`: the gate in front of `depthkd-student@champion`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
