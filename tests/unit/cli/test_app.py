import json
from pathlib import Path

import pytest
import typer.main

from clickloop.cli.app import app, main


def all_commands():
    group = typer.main.get_command(app)

    def walk(cmd, path):
        yield path, cmd
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])

    return list(walk(group, []))


@pytest.mark.parametrize(
    "path", [p for p, _ in all_commands()], ids=lambda p: " ".join(p) or "root"
)
def test_every_command_has_help_with_an_example(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out, f"`clickloop {' '.join(path)} --help` shows no example"


def test_init_then_doctor_succeeds(tmp_path: Path, capsys):
    assert main(["init", str(tmp_path / "shop")]) == 0
    assert (tmp_path / "shop" / "clickloop.yaml").exists()
    capsys.readouterr()
    assert main(["-p", str(tmp_path / "shop"), "--json", "doctor"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert {c["component"] for c in report["checks"]} >= {"bus", "lake", "online store", "metadata"}


def test_init_refuses_to_overwrite(tmp_path: Path, capsys):
    assert main(["init", str(tmp_path)]) == 0
    assert main(["init", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_misspelt_config_key_exits_2_naming_it_and_the_closest(tmp_path: Path, capsys):
    (tmp_path / "clickloop.yaml").write_text("project: x\nserving:\n  prot: 8080\n")
    assert main(["-p", str(tmp_path), "doctor"]) == 2
    err = capsys.readouterr().err
    assert "line 3: serving.prot: unknown key; did you mean 'port'?" in err
    assert main(["-p", str(tmp_path), "--json", "doctor"]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["error"] == "config_error" and "serving.prot" in body["message"]


def test_usage_errors_exit_2(capsys):
    assert main(["simulate", "--no-such-option"]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["simulate", "--out", "/tmp/x", "--format", "xml"]) == 2
    assert "unknown --format" in capsys.readouterr().err


def test_missing_project_exits_2_with_a_hint(tmp_path: Path, capsys):
    assert main(["-p", str(tmp_path / "nowhere"), "doctor"]) == 2
    assert "clickloop init" in capsys.readouterr().err


def test_simulate_json_summary(tmp_path: Path, capsys):
    assert (
        main(
            [
                "--json",
                "simulate",
                "--events",
                "2000",
                "--days",
                "1",
                "--seed",
                "7",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 2000 and summary["seed"] == 7
    assert (tmp_path / "truth" / "urls.json").exists()


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("clickloop ")
