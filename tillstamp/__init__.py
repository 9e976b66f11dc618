"""tillstamp: offline-first loyalty for the point of sale."""
__version__ = "0.1.0"
