"""`python pipelines/prepare_data.py ...` = `depthkd data prepare ...`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["data", "prepare", *sys.argv[1:]]))
