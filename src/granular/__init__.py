"""granular: granular energy certificates from meter data, anchored on an EVM chain."""

__version__ = "0.1.0"
