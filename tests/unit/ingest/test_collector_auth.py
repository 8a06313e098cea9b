"""Collector authentication, and what `clickloop doctor` says about it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from clickloop.errors import AuthError, ConfigError
from clickloop.ingest.collector_auth import CollectorAuth
from clickloop.ops.doctor import diagnose
from clickloop.project import Project


def auth(*tokens: str, pixel_public: bool = False) -> CollectorAuth:
    return CollectorAuth.from_tokens([SecretStr(t) for t in tokens], pixel_public=pixel_public)


def test_every_configured_token_opens_and_nothing_else_does():
    a = auth("alpha", "beta-longer-token")
    a.check("Bearer alpha")
    a.check("bearer beta-longer-token")
    a.check("  Bearer   alpha  ")
    for header in (None, "", "Bearer", "Bearer ", "Basic alpha", "alpha", "Bearer alph",
                   "Bearer alpha2", "Bearer ALPHA", "Bearer \udcff"):  # fmt: skip
        with pytest.raises(AuthError) as err:
            a.check(header)
        assert err.value.http_status == 401
        assert "alpha" not in str(err.value)


def test_the_pixel_is_public_only_when_configured():
    auth("t", pixel_public=True).check(None, pixel=True)
    with pytest.raises(AuthError):
        auth("t", pixel_public=True).check(None)  # posts still need a token
    with pytest.raises(AuthError):
        auth("t").check(None, pixel=True)


def test_no_tokens_means_authentication_is_disabled():
    a = auth()
    assert not a.enabled and "disabled" in a.describe()
    a.check(None)
    a.check("Bearer anything", pixel=True)


def test_an_empty_token_is_a_configuration_error_not_an_open_door():
    with pytest.raises(ConfigError, match=r"tokens\[1\] is empty"):
        auth("ok", "  ")


def test_describe_never_shows_a_token():
    text = auth("super-secret", "other", pixel_public=True).describe()
    assert text == "2 token(s), public pixel"


def _doctor_line(tmp_path: Path, source: str, env: dict[str, str] | None = None):
    (tmp_path / "clickloop.yaml").write_text(f"sources:\n  web: {source}\n")
    report = diagnose(Project.load(tmp_path, env=env or {}))
    return next(c for c in report.checks if c.component == "source web")


def test_doctor_says_what_the_collector_will_do(tmp_path: Path):
    line = _doctor_line(tmp_path, "{type: collector}")
    assert line.status == "warn" and "authentication disabled" in line.detail
    line = _doctor_line(tmp_path, "{type: collector, tokens: ['${T}'], port: 9000}", {"T": "x1"})
    assert line.status == "ok" and line.detail == "listens on 127.0.0.1:9000, 1 token(s)"
    assert "x1" not in line.detail
    line = _doctor_line(tmp_path, "{type: collector, tokens: ['${T:-}']}")
    assert line.status == "fail" and "tokens[0] is empty" in line.detail
