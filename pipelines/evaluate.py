"""`python pipelines/evaluate.py --model REF [--protocol P] [--tta MODE] [--out report.json]`
= `depthkd evaluate`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
