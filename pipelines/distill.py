"""The main job: `python pipelines/distill.py [--config FILE] [key=value ...]` = `depthkd distill`.

Also the entry point of `ray job submit --working-dir . -- python pipelines/distill.py`.
"""

import sys

from depthkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
