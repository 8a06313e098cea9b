"""The main job: the loop on embedded defaults, as far as it is built, told step by step.

A week of simulated traffic goes through every built stage, with no server:

1. simulate four sites (ground truth written beside the data);
2. batch-import days 1–6 into the raw lake (validation, quarantine, dedupe);
3. learn the URL knowledge from the lake and explain one URL;
4. backfill daily feature snapshots offline and materialise the newest online;
5. go live: day 7 is posted to the HTTP collector, which publishes to the bus;
   the stream ingester writes it to the lake while the streaming feature engine
   updates the online store;
6. reconcile every record with the simulator's truth;
7. train the ``ctr`` model, register it, promote it through its gates and write
   its report.

Each stage's issue appends its step here, so ``make demo`` always shows the
whole loop that exists today. The demo owns its project: it refuses to run in a
directory that holds another project, and starts from fresh embedded state.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from clickloop.errors import UsageError
from clickloop.project import CONFIG_FILE, Project

DEMO_NAME = "clickloop-demo"
POST_BATCH = 500  # events per collector request (NDJSON), like a busy tag manager's flush


class Story:
    """Prints what each step did (unless --json) and keeps it for the JSON result."""

    def __init__(self, *, json: bool, quiet: bool) -> None:
        self.console = Console(stderr=json, quiet=json or quiet, highlight=False)
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

    def table(self, table: Table) -> None:
        self.console.print(table)


def _project(directory: Path, story: Story) -> Project:
    """The demo project: created on first run, its embedded state reset on every run."""
    config = directory / CONFIG_FILE
    if not config.exists():
        from clickloop.config.template import GITIGNORE, PROJECT_YAML

        directory.mkdir(parents=True, exist_ok=True)
        config.write_text(PROJECT_YAML.format(name=DEMO_NAME))
        (directory / ".gitignore").write_text(GITIGNORE)
        story.say(f"created {config}")
    project = Project.load(directory)
    if project.name != DEMO_NAME:
        raise UsageError(
            f"{config} belongs to project {project.name!r}, not a demo project",
            hint="the demo resets its embedded state: give it its own --dir (default "
            "clickloop-demo)",
        )
    if project.home.exists():
        shutil.rmtree(project.home)
        story.say(f"reset the demo's embedded state in {project.home}")
    return project


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
    project = _project(directory, story)
    story.say(
        f"project [bold]{project.name}[/bold] at {project.root}; embedded state in {project.home}"
    )
    story.done(t, root=str(project.root))

    t = story.step("simulate traffic")
    from clickloop.simulate import simulate

    sim_dir = project.state_path("demo", "sim")
    # the week ends at midnight today, so day 7 is "live": the collector stamps arrival
    # times with the real clock, and events dated ahead of it are refused as it would refuse
    # them in production
    start = datetime.now(UTC).date() - timedelta(days=8)
    summary = simulate(sim_dir, events=events, days=7, seed=seed, start=start, force=True)
    story.say(
        f"{summary['records']:,} records over {summary['days']} days from "
        f"{summary['users']:,} users on {len(summary['page_views_by_host'])} sites, from "
        f"{start.isoformat()} "
        f"→ {sim_dir / 'events'}"
    )
    story.say("  " + ", ".join(f"{k} {v:,}" for k, v in summary["by_type"].items()))
    story.say(
        f"  Bayes-optimal click AUC {summary['bayes_auc']['click']:.4f} "
        f"(the ceiling for any model on this data)"
    )
    story.done(t, records=summary["records"], by_type=summary["by_type"])

    files = [sim_dir / f["file"] for f in summary["files"]]
    batch_files, live_files = files[:-1], files[-1:]

    t = story.step("batch import into the raw lake")
    batch = _batch_import(project, batch_files, story)
    story.done(t, **batch)

    t = story.step("learn what the URLs mean")
    urls = _learn_urls(project, story)
    story.done(t, **urls)

    t = story.step("features: backfill offline, materialise online")
    offline = _features_offline(project, story)
    story.done(t, **offline)

    t = story.step("live traffic: collector → bus → lake and streaming features")
    from clickloop.demo_live import run_live

    live = run_live(project, live_files, story, batch_size=POST_BATCH)
    story.done(t, **live)

    t = story.step("reconcile every record with the simulator's truth")
    rec = _reconcile(project, summary["expected"], live["collector"]["rejected_by_reason"], story)
    story.done(t, **rec)

    t = story.step("train, register and promote the ctr model")
    trained = _train(project, summary, story)
    story.done(t, **trained)

    total = time.perf_counter() - story._t0
    story.console.rule(f"[bold]done in {total:.1f}s")
    return {
        "project": str(project.root),
        "steps": story.steps,
        "seconds": round(total, 2),
        "truth": orjson.loads((sim_dir / "truth" / "labels.json").read_bytes()),
    }


# -- steps -----------------------------------------------------------------------------------


def _batch_import(project: Project, files: list[Path], story: Story) -> dict[str, Any]:
    from clickloop.ingest.batch import import_files

    report = import_files(project, [str(f) for f in files])
    c = report.counts
    story.say(
        f"{len(files)} files, {c.received:,} records in {report.seconds:.1f}s "
        f"({report.rate:,.0f} records/s, {report.commits} commit(s))"
    )
    story.say(
        f"  accepted {c.accepted:,} · duplicates dropped {c.duplicates:,} · quarantined "
        + (", ".join(f"{r} {n:,}" for r, n in sorted(c.quarantined.items())) or "none")
    )
    story.say("  a re-run adds nothing: files are fingerprinted, event ids deduplicated")
    return {"files": len(files), **report.counts.to_json(), "balanced": c.balanced}


def _learn_urls(project: Project, story: Story) -> dict[str, Any]:
    from clickloop.urls.knowledge import knowledge_path, load_knowledge
    from clickloop.urls.sources import learn_lake

    path = knowledge_path(project)
    kb, counts = learn_lake(project)
    knowledge = load_knowledge(project)
    hosts = [(name, len(h.templates)) for name, h in kb.hosts.items()]
    story.say(
        f"read {counts.rows:,} URLs from the lake; {sum(n for _, n in hosts)} templates on "
        f"{len(hosts)} hosts → {path} (version {knowledge.version}; review, edit and commit it)"
    )
    table = Table("host", "template (top 3 by traffic)", "fields")
    for name, host in sorted(kb.hosts.items()):
        for tpl in sorted(host.templates, key=lambda t: -t.urls)[:3]:
            fields = [f"{k}: {f.kind}" for k, f in tpl.fields.items()]
            fields += [f"?{k}: {f.kind}" for k, f in tpl.query.items()]
            table.add_row(name, tpl.pattern, ", ".join(fields) or "-")
    story.table(table)
    url = "https://Shop.Example.com/items/1/1234/?utm_source=news&gclid=x1"
    row = knowledge.extract_one(url)
    shown = {k: v for k, v in row.items() if v is not None}
    story.say(f"[bold]{url}[/bold] is understood as:")
    story.say("  " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return {
        "urls": counts.rows,
        "hosts": len(hosts),
        "templates": sum(n for _, n in hosts),
        "knowledge_version": knowledge.version,
        "example": {"url": url, "fields": shown},
    }


def _features_offline(project: Project, story: Story) -> dict[str, Any]:
    from clickloop.features import backfill, materialize

    with open_lake_ctx(project) as lake:
        stats = lake.stats()
    first, last = _time_range(stats)
    start = first.replace(hour=0, minute=0, second=0, microsecond=0)
    end = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    sets = list(project.config.features)
    results = backfill(project, sets, start=start, end=end, every=timedelta(days=1))
    table = Table("feature set", "version", "daily snapshots", "rows", "seconds")
    for r in results:
        table.add_row(
            r.feature_set, r.version[:12], str(len(r.snapshots)), f"{r.rows:,}", f"{r.seconds:.1f}"
        )
    story.table(table)
    online = materialize(project, sets)
    rows = sum(o["rows"] for o in online)
    story.say(
        f"materialised the newest snapshot of {len(online)} sets into the online store "
        f"({rows:,} entity rows)"
    )
    return {"backfill": [r.to_dict() for r in results], "materialized": online}


def _reconcile(
    project: Project, expected: dict[str, Any], rejected: dict[str, int], story: Story
) -> dict[str, Any]:
    with open_lake_ctx(project) as lake:
        sources = lake.totals()
    from clickloop.lake.log import SourceCounts

    total = SourceCounts()
    for counts in sources.values():
        total.add(counts)
    quarantined = dict(total.quarantined)
    outcome = dict(quarantined)
    for reason, n in rejected.items():
        outcome[reason] = outcome.get(reason, 0) + n
    table = Table("outcome", "records", "simulator truth")
    table.add_row(
        "in the lake (unique valid events)", f"{total.accepted:,}", f"{expected['valid']:,}"
    )
    table.add_row("duplicates dropped", f"{total.duplicates:,}", f"{expected['duplicates']:,}")
    for reason in sorted(set(outcome) | set(expected["quarantined"])):
        table.add_row(
            f"quarantined or rejected: {reason}",
            f"{outcome.get(reason, 0):,}",
            f"{expected['quarantined'].get(reason, 0):,}",
        )
    story.table(table)
    agrees = (
        total.accepted == expected["valid"]
        and total.duplicates == expected["duplicates"]
        and outcome == expected["quarantined"]
    )
    by_source = ", ".join(f"{name}: {c.accepted:,}" for name, c in sorted(sources.items()))
    story.say(f"  accepted by source — {by_source}")
    story.say(
        "[green]every record accounted for exactly once; matches the ground truth[/green]"
        if agrees
        else "[red]the lake's accounting disagrees with the ground truth[/red]"
    )
    return {
        "accepted": total.accepted,
        "duplicates": total.duplicates,
        "quarantined": quarantined,
        "rejected_by_collector": rejected,
        "by_source": {k: v.to_json() for k, v in sources.items()},
        "matches_truth": agrees,
    }


def _train(project: Project, summary: dict[str, Any], story: Story) -> dict[str, Any]:
    from clickloop.training import train

    result = train(project, "ctr", promote=True)
    s = result.summary()
    test = s["test"]
    story.say(
        f"ctr:{s['version']} on {s['examples']:,} impressions, "
        f"{s['features_kept']} of {s['features_candidates']} candidate features kept"
    )
    bayes = summary["bayes_auc"]["click"]
    story.say(
        f"  test ROC-AUC {test['roc_auc']:.4f} (constant baseline {s['baseline']['roc_auc']:.2f}, "
        f"Bayes-optimal {bayes:.4f}); log loss {test['log_loss']:.4f}; ECE {test['ece']:.4f}"
    )
    story.say(
        f"  at threshold {test['threshold']:.3f}: precision {test['precision']:.3f}, "
        f"recall {test['recall']:.3f}, F1 {test['f1']:.3f}"
    )
    story.say(
        f"  {'promoted to ctr@champion' if s['promoted'] else 'registered as ctr@challenger'}; "
        f"report: [bold]{s['report']}[/bold]"
    )
    return {k: s[k] for k in ("model", "version", "examples", "test", "promoted", "report")}


# -- small helpers ---------------------------------------------------------------------------


class open_lake_ctx:  # noqa: N801 - used like a function
    """``with open_lake_ctx(project) as lake:`` closes the lake's writer afterwards."""

    def __init__(self, project: Project) -> None:
        from clickloop.lake import open_lake

        self.lake = open_lake(project)

    def __enter__(self) -> Any:
        return self.lake

    def __exit__(self, *exc: object) -> None:
        self.lake.close()


def _time_range(stats: dict[str, Any]) -> tuple[Any, Any]:
    """The oldest and newest event times of the lake's statistics."""

    def parse(v: Any) -> datetime:
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))

    return parse(stats["events"]["oldest_event"]), parse(stats["events"]["newest_event"])


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


__all__ = ["Story", "run_demo", "wait_until"]
