"""`python pipelines/teacher.py [--config FILE] [key=value ...]` = `depthkd teacher`."""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["teacher", *sys.argv[1:]]))
