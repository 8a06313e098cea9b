"""URL knowledge: what the URLs of each site mean, as features.

In ``shop.example.com/items/1/1234`` the ``1`` is a category (clothes) and ``1234``
an item: this package parses and normalises URLs, applies declared rules (WHATWG URL
Pattern syntax, ``urls.rules``), discovers templates from traffic (``learn``), keeps
them in a reviewed knowledge file, and turns URLs into columns for batch features,
streaming features and request-time serving.

>>> from clickloop.urls import load_knowledge
>>> kn = load_knowledge("shop")                                      # doctest: +SKIP
>>> kn.extract(events.column("url"))    # host, domain, template, path, fields  # doctest: +SKIP
>>> kn.extract_one("https://shop.example.com/items/1/1234")  # at request time  # doctest: +SKIP
>>> kn.explain("https://shop.example.com/items/1/1234?utm_source=x")        # doctest: +SKIP
"""

from clickloop.urls.kbfile import KnowledgeFile
from clickloop.urls.knowledge import BASE_COLUMNS, UrlKnowledge, from_config, load_knowledge
from clickloop.urls.parse import (
    TRACKING_PARAMS,
    ParsedUrl,
    is_tracking,
    normalize,
    parse_url,
    registrable_domain,
    try_parse_url,
)

__all__ = [
    "BASE_COLUMNS",
    "TRACKING_PARAMS",
    "KnowledgeFile",
    "ParsedUrl",
    "UrlKnowledge",
    "from_config",
    "is_tracking",
    "load_knowledge",
    "normalize",
    "parse_url",
    "registrable_domain",
    "try_parse_url",
]
