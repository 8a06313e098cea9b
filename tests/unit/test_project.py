from pathlib import Path

import pytest

from clickloop.errors import ConfigError
from clickloop.project import Project, is_url


def test_load_resolves_home_relative_to_the_project(tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text("project: shop\nhome: state\n")
    p = Project.load(tmp_path, env={})
    assert p.name == "shop"
    assert p.home == tmp_path / "state"
    assert p.state_path("bus") == tmp_path / "state" / "bus"
    assert p.resolve("data/x.csv") == str(tmp_path / "data" / "x.csv")
    assert p.resolve("s3://bucket/x") == "s3://bucket/x"


def test_project_dir_from_environment(tmp_path: Path):
    (tmp_path / "clickloop.yaml").write_text("project: envy\n")
    assert Project.load(env={"CLICKLOOP_PROJECT_DIR": str(tmp_path)}).name == "envy"


def test_missing_config_is_an_error_unless_optional(tmp_path: Path):
    with pytest.raises(ConfigError, match="clickloop init"):
        Project.load(tmp_path, env={})
    p = Project.load(tmp_path, env={}, require_config=False)
    assert p.config_path is None and p.home == tmp_path / ".clickloop"


def test_state_never_lands_in_the_home_directory(tmp_path: Path):
    p = Project.load(tmp_path, env={}, require_config=False)
    assert str(p.home).startswith(str(tmp_path))
    assert not str(p.home).startswith(str(Path.home()) + "/.clickloop")


def test_is_url():
    assert is_url("s3://b/k") and is_url("memory://x") and not is_url("/tmp/x")
