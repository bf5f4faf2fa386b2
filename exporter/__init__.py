"""cache-exporter: warns before a cache runs out of memory."""

__version__ = "0.1.0"
