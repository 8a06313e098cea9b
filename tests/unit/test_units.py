from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.units import format_duration, parse_bytes, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1.5h", 5400),
        (" 5 M ", 300),
        (90, 90),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "10", "1y", "h", "-5m", True, None, [1]])
def test_parse_duration_rejects_with_the_expected_forms(bad):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**9))
def test_format_then_parse_is_identity(ms):
    td = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(td)) == td


def test_format_duration_is_shortest():
    assert format_duration(timedelta(days=7)) == "7d"
    assert format_duration(timedelta(hours=36)) == "36h"
    assert format_duration(timedelta(minutes=90)) == "90m"


@pytest.mark.parametrize(
    ("text", "n"),
    [("64MiB", 64 * 1024**2), ("1GB", 10**9), ("512k", 512000), (1024, 1024), ("10 kib", 10240)],
)
def test_parse_bytes(text, n):
    assert parse_bytes(text) == n


def test_parse_bytes_rejects_nonsense():
    with pytest.raises(ValueError, match="expected a size"):
        parse_bytes("lots")
