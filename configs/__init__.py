"""The shipped configs, importable as `depthkd.configs` so an installed package carries them."""
