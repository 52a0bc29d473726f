"""A Ray Tune sweep: `python pipelines/sweep.py --config configs/sweep_demo.yaml [key=value ...]`
= `depthkd sweep`.

Also the entry point of `ray job submit --working-dir . -- python pipelines/sweep.py --config ...`.
"""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
