"""`python pipelines/export.py --model REF --image IMG --out FILE [--format onnx] [--dynamic]`
= `depthkd export`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
