"""The main job: the loop on embedded defaults, as far as it is built, told step by step.

Each stage's issue appends its step here, so ``make demo`` always shows the
whole loop that exists today.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow.json as pajson
from rich.console import Console
from rich.table import Table

from clickloop.events.mapping import Mapping
from clickloop.project import CONFIG_FILE, Project


class Story:
    """Prints what each step did (unless --json) and keeps it for the JSON result."""

    def __init__(self, *, json: bool, quiet: bool) -> None:
        self.console = Console(stderr=json, quiet=json, highlight=False)
        self.quiet = quiet
        self.steps: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()

    def step(self, title: str) -> float:
        self.console.rule(f"[bold]{len(self.steps) + 1}. {title}")
        self.steps.append({"step": title})
        return time.perf_counter()

    def done(self, started: float, **facts: Any) -> None:
        elapsed = time.perf_counter() - started
        self.steps[-1].update(facts, seconds=round(elapsed, 2))

    def say(self, text: str) -> None:
        self.console.print(text)


def run_demo(
    directory: Path,
    *,
    events: int = 300_000,
    seed: int = 7,
    json: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    story = Story(json=json, quiet=quiet)
    directory = directory.resolve()

    t = story.step("project")
    if not (directory / CONFIG_FILE).exists():
        from clickloop.config.template import GITIGNORE, PROJECT_YAML

        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(PROJECT_YAML.format(name="clickloop-demo"))
        (directory / ".gitignore").write_text(GITIGNORE)
        story.say(f"created {directory / CONFIG_FILE}")
    project = Project.load(directory)
    story.say(
        f"project [bold]{project.name}[/bold] at {project.root}; embedded state in {project.home}"
    )
    story.done(t, root=str(project.root))

    t = story.step("simulate traffic")
    from clickloop.simulate import simulate

    sim_dir = project.state_path("demo", "sim")
    summary = simulate(sim_dir, events=events, days=7, seed=seed, force=True)
    story.say(
        f"{summary['records']:,} records over {summary['days']} days from "
        f"{summary['users']:,} users on {len(summary['page_views_by_host'])} sites "
        f"→ {sim_dir / 'events'}"
    )
    story.say("  " + ", ".join(f"{k} {v:,}" for k, v in summary["by_type"].items()))
    story.say(
        f"  Bayes-optimal click AUC {summary['bayes_auc']['click']:.4f} "
        f"(the ceiling for any model on this data)"
    )
    story.done(t, records=summary["records"], by_type=summary["by_type"])

    t = story.step("validate against the event contract")
    valid = 0
    reasons: dict[str, int] = {}
    mapping = Mapping()
    for f in summary["files"]:
        table = pajson.read_json(sim_dir / f["file"])
        result = mapping.validate_table(table, max_future=project.config.ingest.max_future)
        valid += result.events.num_rows
        for reason, count in result.counts.items():
            reasons[reason] = reasons.get(reason, 0) + count
    expected = summary["expected"]
    table_ = Table("outcome", "records", "simulator truth")
    table_.add_row(
        "valid (incl. duplicates)", f"{valid:,}", f"{expected['valid'] + expected['duplicates']:,}"
    )
    for reason in sorted(set(reasons) | set(expected["quarantined"])):
        table_.add_row(
            f"quarantine: {reason}",
            f"{reasons.get(reason, 0):,}",
            f"{expected['quarantined'].get(reason, 0):,}",
        )
    story.console.print(table_)
    agrees = (
        reasons == expected["quarantined"] and valid == expected["valid"] + expected["duplicates"]
    )
    story.say(
        "[green]every record accounted for; matches the ground truth[/green]"
        if agrees
        else "[red]validation disagrees with the ground truth[/red]"
    )
    story.done(t, valid=valid, quarantined=reasons, matches_truth=agrees)

    total = time.perf_counter() - story._t0
    story.console.rule(f"[bold]done in {total:.1f}s")
    return {
        "project": str(project.root),
        "steps": story.steps,
        "seconds": round(total, 2),
        "truth": orjson.loads((sim_dir / "truth" / "labels.json").read_bytes()),
    }
