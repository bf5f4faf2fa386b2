"""Service discovery: turning one configured template into the targets it stands for.

Each kind (Redis Cluster, Sentinel, file_sd, DNS, ElastiCache-style memcached) lives in its own
module and returns ``Found`` records; the template's other settings apply to every one of them.
"""

from exporter.discovery.base import DiscoveryError, Found

__all__ = ["DiscoveryError", "Found"]
