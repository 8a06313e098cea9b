"""HTTP collector: events/s with 100-event batches, latency of single events at a steady rate.

The collector runs as `clickloop ingest serve` (its own process, uvloop + httptools,
the embedded durable log as bus, bearer-token auth on). Load comes from a
separate process (this file run as ``python bench/bench_collector.py load …``):
a small hand-written HTTP/1.1 keep-alive client on asyncio, far lighter than
httpx, so the client costs the 2-core machine as little as possible. Baselines
in the same run: the same server stack answering 202 at once (no reading of
the body, no validation, no bus), and the bus publishing the same events alone.

    python bench/run.py --only collector [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TITLE = "HTTP collector (`clickloop ingest serve`)"
NOTES = (
    "Server: `clickloop ingest serve` in its own process (Starlette + uvicorn with uvloop and "
    "httptools; the embedded durable log with `fsync: batch`; bearer-token auth on). Load: a "
    "separate process, a hand-written asyncio HTTP/1.1 keep-alive client. *Batches*: 16 "
    "connections posting 100-event JSON arrays back to back; only events answered 202 (durable) "
    "count. *Latency*: single-event posts on 32 connections at a steady 1,000 requests/s, open "
    "loop (each latency counts from the request's scheduled time, so queueing shows). "
    "Baselines from the same run: the same uvicorn/Starlette stack with an endpoint that reads "
    "the body and answers 202 (no parsing, validation or bus), and the bus publishing the same "
    "events alone in batches of the collector's mean group-commit size. Server, load generator "
    "and any other work on the machine share its 2 cores, so latency tails move with the "
    "machine's load; the bare endpoint's tail in the same run shows how much."
)

TOKEN = "bench-token"
HERE = Path(__file__).resolve().parent


# -- the load generator (runs in its own process) ------------------------------------------


def _bodies(count: int, per: int, seed: int) -> list[bytes]:
    import orjson

    now_ms = int(time.time() * 1000)
    out = []
    n = 0
    for b in range(count):
        events = []
        for _ in range(per):
            n += 1
            events.append(
                {
                    "event_id": f"{seed}-{n}",
                    "ts": now_ms - (n % 5000),
                    "type": ("page_view", "impression", "click")[n % 3],
                    "user_id": f"u{(n * 7919) % 50000}",
                    "session_id": f"s{(n * 104729) % 200000}",
                    "url": f"https://shop.example.com/items/{n % 9}/{(n * 31) % 100000}",
                    "referrer": "https://www.example.org/search?q=shoes",
                    "props": {"item_id": str((n * 31) % 100000), "position": n % 10},
                }
            )
        out.append(orjson.dumps(events if per > 1 else events[0]))
        _ = b
    return out


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    bodies = _bodies(args.bodies, args.per, args.seed)
    reqs = [_request(args.host, args.port, args.path, b) for b in bodies]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    start = time.perf_counter() + 0.2
    end = start + args.duration

    async def conn(i: int) -> None:
        reader, writer = await asyncio.open_connection(args.host, args.port)
        k = i
        sent = 0
        try:
            while True:
                if args.rate:
                    # open loop: request n of this connection is due at start + n * gap
                    gap = args.conns / args.rate
                    due = start + (i / args.conns + sent) * gap
                    if due >= end:
                        return
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    due = time.perf_counter()
                    if due >= end:
                        return
                status = await _exchange(reader, writer, reqs[k % len(reqs)])
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - due)
                k += args.conns
                sent += 1
        finally:
            writer.close()

    await asyncio.sleep(max(0.0, start - time.perf_counter() - 0.1))
    await asyncio.gather(*(conn(i) for i in range(args.conns)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
        "ok": statuses.get(202, 0),
        "events_ok": statuses.get(202, 0) * args.per,
        "elapsed": elapsed,
        "p50_ms": pct(0.50) * 1000,
        "p99_ms": pct(0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
    }


def _load_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/events")
    ap.add_argument("--per", type=int, default=100)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s in total (0: closed loop)")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--bodies", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(_load(args))
    except ImportError:
        result = asyncio.run(_load(args))
    print(json.dumps(result))


# -- the bare baseline server (runs in its own process) -------------------------------------


def _bare_main(argv: list[str]) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def accept(request: Any) -> Response:
        await request.body()  # read, as any collector must; no parsing, validation or bus
        return Response(b'{"accepted":100,"rejected":0}', 202, media_type="application/json")

    app = Starlette(routes=[Route("/v1/events", accept, methods=["POST"])])
    from clickloop.ingest.collector import bind

    sock = bind("127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(
        uvicorn.Config(app, loop="auto", http="auto", access_log=False, log_config=None)
    ).run(sockets=[sock])


# -- the benchmark ---------------------------------------------------------------------------


def _start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on http://" in line:
            url = line.split("listening on ", 1)[1].split()[0]
            return proc, int(url.rsplit(":", 1)[1])
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=120)
    return out


def _loadgen(port: int, **kw: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "load", "--port", str(port)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bus_alone(path: Path, seconds: float, per: int) -> float:
    """Events/s of publishing the same events straight to the durable log, ``per`` a call."""
    import orjson

    from clickloop.bus.local import LocalBus

    messages = []
    for body in _bodies(100, 100, 99):
        messages += [(e["user_id"].encode(), orjson.dumps(e)) for e in orjson.loads(body)]
    batches = [messages[i : i + per] for i in range(0, len(messages) - per + 1, per)]
    bus = LocalBus(path)
    producer = bus.producer()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        producer.publish("events", batches[n % len(batches)])
        n += 1
    elapsed = time.perf_counter() - t0
    producer.close()
    bus.close()
    return n * per / elapsed


def run(ctx: Any) -> list[dict[str, Any]]:
    duration = 3.0 if ctx.quick else 6.0
    repeat = 2 if ctx.quick else 3
    work = ctx.scratch("collector")
    (work / "clickloop.yaml").write_text(
        "project: bench\nsources:\n  web: {type: collector, tokens: ['${BENCH_COLLECTOR_TOKEN}']}\n"
    )
    env = {**os.environ, "BENCH_COLLECTOR_TOKEN": TOKEN}
    env.pop("CLICKLOOP_PROJECT_DIR", None)
    cli = [sys.executable, "-m", "clickloop.cli", "-p", str(work), "ingest", "serve", "--port", "0"]
    bare = [sys.executable, str(Path(__file__).resolve()), "bare"]

    results: list[dict[str, Any]] = []
    # throughput: 100-event batches, closed loop
    thr: dict[str, list[float]] = {"collector": [], "bare": []}
    lat: dict[str, list[dict[str, Any]]] = {"collector": [], "bare": []}
    accepted = 0
    for name, cmd in (("collector", cli), ("bare", bare)):
        proc, port = _start(cmd, env)
        try:
            warm = _loadgen(port, per=100, conns=8, duration=1.0, bodies=50)
            accepted += warm["events_ok"] if name == "collector" else 0
            for r in range(repeat):
                out = _loadgen(port, per=100, conns=16, duration=duration, seed=r + 1)
                thr[name].append(out["events_ok"] / out["elapsed"])
                accepted += out["events_ok"] if name == "collector" else 0
            if name == "collector":
                per_publish = _events_per_publish(port)
            for r in range(repeat):
                out = _loadgen(
                    port, per=1, conns=32, rate=1000, duration=duration, bodies=4000, seed=r + 10
                )
                out["rate"] = out["requests"] / out["elapsed"]
                lat[name].append(out)
                accepted += out["ok"] if name == "collector" else 0
        finally:
            _stop(proc)
    on_bus = _count_on_bus(work)
    bus_rate = [
        _bus_alone(ctx.scratch(f"bus-alone-{i}"), duration / 2, per_publish) for i in range(repeat)
    ]

    rate = statistics.median(thr["collector"])
    base = statistics.median(thr["bare"])
    results.append(
        {
            "name": "POST 100-event batches, events/s (202 = durable)",
            "median": rate,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": thr["collector"],
            "baseline": base,
            "baseline_name": "bare endpoint: reads the body, answers 202",
            "ratio": rate / base,
            "target": "≥ 20,000 events/s",
            "ok": rate >= 20_000 if not ctx.quick else None,
        }
    )
    bus_median = statistics.median(bus_rate)
    results.append(
        {
            "name": f"… the same events published to the bus alone ({per_publish:,} per publish, "
            "the collector's mean group commit)",
            "median": bus_median,
            "unit": "events/s",
            "fmt": "{:,.0f}",
            "runs": bus_rate,
            "baseline": rate,
            "baseline_name": "through the collector",
            "ratio": bus_median / rate,
        }
    )
    for q in ("p50_ms", "p99_ms"):
        coll = [x[q] for x in lat["collector"]]
        bare_q = statistics.median(x[q] for x in lat["bare"])
        results.append(
            {
                "name": f"single-event POST at 1,000 requests/s, {q[:3]} latency",
                "median": statistics.median(coll),
                "unit": "ms",
                "fmt": "{:,.2f}",
                "runs": coll,
                "baseline": bare_q,
                "baseline_name": "bare 202 endpoint",
                "ratio": statistics.median(coll) / bare_q if bare_q else None,
                "target": "reported (issue 3)",
            }
        )
    achieved = [x["rate"] for x in lat["collector"]]
    non202 = sum(sum(v for k, v in x["statuses"].items() if k != "202") for x in lat["collector"])
    results.append(
        {
            "name": "… rate achieved during the latency runs (non-202 answers: "
            f"{non202}; events on the bus = events answered 202: {on_bus == accepted})",
            "median": statistics.median(achieved),
            "unit": "requests/s",
            "fmt": "{:,.0f}",
            "runs": achieved,
        }
    )
    return results


def _events_per_publish(port: int) -> int:
    """The collector's mean events per durable publish so far (from its /metrics)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    sums = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("clickloop_collector_publish_batch_events_")
    }
    count = sums.get("clickloop_collector_publish_batch_events_count", 0.0)
    return max(1, round(sums.get("clickloop_collector_publish_batch_events_sum", 0.0) / count))


def _count_on_bus(project_dir: Path) -> int:
    from clickloop.bus.base import open_bus
    from clickloop.project import Project

    bus = open_bus(Project.load(project_dir, env={"BENCH_COLLECTOR_TOKEN": TOKEN}))
    try:
        return sum(bus.end_offsets("events").values())
    finally:
        bus.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        _load_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "bare":
        _bare_main(sys.argv[2:])
    else:
        sys.exit("usage: bench_collector.py load|bare …  (the benchmark itself: bench/run.py)")
