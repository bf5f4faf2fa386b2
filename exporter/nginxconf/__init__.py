"""Static check of nginx configs for cached error responses (``cache-exporter audit --nginx-config``).

The incident: a gateway with ``proxy_cache_valid any 1m`` cached a backend 503 and kept serving it
after the backend recovered. A config is read the way nginx reads it, following nginx's own code,
one module per layer:

* ``times``: ``ngx_parse_time``, the values of ``*_cache_valid``;
* ``lexer``: ``ngx_conf_read_token``, one file's words; ``NginxConfigError``, which every layer raises
  with file:line for anything nginx would refuse or anything beyond the checker's bounds;
* ``tree``: ``ngx_conf_parse`` and ``ngx_conf_include``, a file and its includes as one bounded tree;
* ``analysis``: the proxy module's merge over that tree, the findings and the audit row.
"""

from exporter.nginxconf.analysis import (
    CHECK_ERRORS,
    CHECK_NOT_FOUND,
    MODULES,
    analyze,
    audit_report,
    check_nginx_config,
)
from exporter.nginxconf.lexer import NginxConfigError
from exporter.nginxconf.times import parse_nginx_time
from exporter.nginxconf.tree import MAX_FILES, MAX_INCLUDE_DEPTH, Directive, load

__all__ = [
    "CHECK_ERRORS",
    "CHECK_NOT_FOUND",
    "MAX_FILES",
    "MAX_INCLUDE_DEPTH",
    "MODULES",
    "Directive",
    "NginxConfigError",
    "analyze",
    "audit_report",
    "check_nginx_config",
    "load",
    "parse_nginx_time",
]
