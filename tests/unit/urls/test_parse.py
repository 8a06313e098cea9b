"""Parsing and normalisation of single URLs: the rules, one example each."""

from __future__ import annotations

import socket

import pytest

from clickloop.errors import InvalidInputError
from clickloop.urls import is_tracking, normalize, parse_url, registrable_domain, try_parse_url
from clickloop.urls.parse import encode_segment, normalize_path, remove_dot_segments


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Shop.Example.COM/items/1", "https://shop.example.com/items/1"),
        ("https://shop.example.com:443/a", "https://shop.example.com/a"),
        ("http://shop.example.com:80/a", "http://shop.example.com/a"),
        ("http://shop.example.com:8080/a", "http://shop.example.com:8080/a"),
        ("https://shop.example.com:0443/a", "https://shop.example.com/a"),
        ("https://shop.example.com./a/", "https://shop.example.com/a"),
        ("https://shop.example.com", "https://shop.example.com/"),
        ("https://shop.example.com/", "https://shop.example.com/"),
        ("https://shop.example.com//a///b//", "https://shop.example.com/a/b"),
        ("https://x.com/a/./b/../c", "https://x.com/a/c"),
        ("https://x.com/a/b/..", "https://x.com/a"),
        ("https://x.com/%7Euser/%41%62", "https://x.com/~user/Ab"),
        ("https://x.com/caf%c3%a9", "https://x.com/caf%C3%A9"),
        ("https://x.com/café", "https://x.com/caf%C3%A9"),
        ("https://x.com/a b", "https://x.com/a%20b"),
        ("https://x.com/100%", "https://x.com/100%25"),
        ("https://x.com/a%2Fb", "https://x.com/a%2Fb"),
        ("https://user:secret@x.com/a", "https://x.com/a"),
        ("https://x.com/s?q=red+shirt", "https://x.com/s?q=red+shirt"),
        ("https://x.com/s?q=red%20shirt", "https://x.com/s?q=red+shirt"),
        ("https://x.com/s?b=2&a=1&a=0", "https://x.com/s?a=1&a=0&b=2"),
        ("https://x.com/s?q=caf%C3%A9", "https://x.com/s?q=caf%C3%A9"),
        ("https://x.com/s?flag&x=", "https://x.com/s?flag&x="),
        ("https://x.com/s?&&q=1&", "https://x.com/s?q=1"),
        ("https://x.com/s?q=1&utm_source=mail&GCLID=abc&fbclid=z", "https://x.com/s?q=1"),
        ("https://x.com/s#section", "https://x.com/s"),
        ("  https://x.com/s\n", "https://x.com/s"),
        ("https://[2001:DB8::1]:8443/a", "https://[2001:db8::1]:8443/a"),
    ],
)
def test_normalize(url: str, expected: str) -> None:
    assert normalize(url) == expected


@pytest.mark.parametrize(
    "url",
    ["", "shop.example.com/items", "/items/1", "https:///path", "https://x.com:99999/",
     "https://x.com:port/", "mailto:someone@example.com", "not a url"],
)  # fmt: skip
def test_not_urls_are_rejected_with_a_clear_error(url: str) -> None:
    assert try_parse_url(url) is None
    with pytest.raises(InvalidInputError, match="not an absolute URL"):
        parse_url(url)


def test_parts_and_tracking() -> None:
    p = parse_url("https://Shop.example.com/search/?q=red+shirt&page=2&utm_campaign=bf&ref=x")
    assert (p.scheme, p.host, p.port, p.path) == ("https", "shop.example.com", None, "/search")
    assert p.segments == ("search",)
    assert p.query == (("page", "2"), ("q", "red shirt"), ("ref", "x"))
    assert p.tracking == (("utm_campaign", "bf"),)
    assert p.param("q") == "red shirt" and p.param("nope") is None
    custom = parse_url("https://x.com/?ref=x&q=1", tracking=["REF"])
    assert custom.tracking == (("ref", "x"),) and custom.query == (("q", "1"),)


def test_tracking_names() -> None:
    for name in ("utm_source", "UTM_Medium", "utm_whatever", "gclid", "fbclid", "msclkid",
                 "mc_eid", "_ga", "yclid"):  # fmt: skip
        assert is_tracking(name), name
    for name in ("q", "page", "id", "v", "utm"):
        assert not is_tracking(name), name


def test_path_helpers() -> None:
    assert normalize_path("") == "/"
    assert normalize_path("a/b") == "/a/b"
    assert remove_dot_segments("/a/b/../../..") == "/"
    assert encode_segment("café au lait") == "caf%C3%A9%20au%20lait"


def test_registrable_domain_uses_the_bundled_suffix_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from clickloop.urls import parse

    parse._extractor.cache_clear()
    registrable_domain.cache_clear()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tldextract tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert registrable_domain("www.shop-two.co.uk") == "shop-two.co.uk"
    assert registrable_domain("m.video.example.net") == "example.net"
    assert registrable_domain("a.b.example.com.au") == "example.com.au"
    assert registrable_domain("192.168.0.1") == "192.168.0.1"
    assert registrable_domain("[::1]") == "[::1]"
    assert registrable_domain("localhost") == "localhost"
    extractor = parse._extractor()
    assert extractor.suffix_list_urls == ()  # type: ignore[attr-defined]


def test_session_ids_are_not_part_of_the_page() -> None:
    assert normalize("https://x.com/a;jsessionid=ABC/b;JSESSIONID=z") == "https://x.com/a/b"
    assert normalize("https://x.com/a;jsession%69d=1?PHPSESSID=9&q=2") == "https://x.com/a?q=2"
    assert normalize("https://x.com/a;v=2") == "https://x.com/a;v=2"
