"""Entry scripts: thin shims over the `depthkd` CLI, so `ray job submit -- python pipelines/X.py`
works the same as the command."""
