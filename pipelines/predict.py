"""`python pipelines/predict.py --model REF INPUT... --out DIR` = `depthkd predict`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
