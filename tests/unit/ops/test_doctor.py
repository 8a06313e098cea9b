from pathlib import Path

from clickloop.ops.doctor import diagnose
from clickloop.project import Project


def project(tmp_path: Path, yaml: str) -> Project:
    (tmp_path / "clickloop.yaml").write_text(yaml)
    return Project.load(tmp_path, env={})


def test_embedded_defaults_are_all_reachable(tmp_path: Path):
    report = diagnose(project(tmp_path, "project: p\n"))
    assert report.ok
    assert {(c.component, c.backend, c.status) for c in report.checks} >= {
        ("bus", "local", "ok"),
        ("lake", "local", "ok"),
        ("online store", "sqlite", "ok"),
        ("metadata", "sqlite", "ok"),
    }


def test_unreachable_servers_fail_with_a_one_line_reason_and_no_secret(tmp_path: Path):
    report = diagnose(
        project(
            tmp_path,
            (
                "stores:\n  online: {type: redis, url: 'redis://:s3cret@127.0.0.1:1/0'}\n"
                "  metadata: {type: postgres, url: 'postgresql://u:s3cret@127.0.0.1:1/db'}\n"
            ),
        )
    )
    assert not report.ok
    failed = {c.component: c for c in report.checks if c.status == "fail"}
    assert set(failed) == {"online store", "metadata"}
    assert all("s3cret" not in c.detail and "\n" not in c.detail for c in failed.values())


def test_files_source_without_matches_is_a_warning(tmp_path: Path):
    report = diagnose(project(tmp_path, "sources:\n  logs: {type: files, path: 'in/*.csv'}\n"))
    check = next(c for c in report.checks if c.component == "source logs")
    assert check.status == "warn" and "no files match" in check.detail
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("x\n")
    check = next(
        c for c in diagnose(Project.load(tmp_path, env={})).checks if c.component == "source logs"
    )
    assert check.status == "ok" and "1 file(s)" in check.detail
