"""depthkd platform runtime: config, data, training, tracking and evaluation."""

__version__ = "0.1.0"
