"""cee-bench: train and measure early-exit language models under one harness."""

__version__ = "0.1.0"
