"""``make run``'s private servers: started for a default URL that does not answer, never for one the developer set.

The real ``postgres`` and ``redis-server`` run here, in a temporary ``var`` directory, on ports
where nothing listens (standing in for the defaults, which answer on a machine that runs the
tests). The tests connect to what was started, and check that the processes are gone afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from services.core.settings import Settings
from services.devstack import postgres_server, redis_server
from services.devstack.processes import DevServerError, port_is_free
from services.devstack.redis_server import PrivateRedis
from services.devstack.servers import Dependency, dependencies, provided
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def var_dir() -> Iterator[Path]:
    """A fresh ``var``; outside pytest's 0700 temporary tree, so that the postgres user reaches it under root."""
    directory = Path(tempfile.mkdtemp(prefix="afterword-var-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def postgres(port: int, set_in: str | None = None) -> Dependency:
    return Dependency("postgres", "DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/afterword", set_in)


def redis(port: int, set_in: str | None = None) -> Dependency:
    return Dependency("redis", "REDIS_URL", f"redis://127.0.0.1:{port}/0", set_in)


def server_pids(var_dir: Path) -> dict[str, int]:
    """The pids the private servers wrote: the postmaster's and redis-server's."""
    return {
        "postgres": int((var_dir / "postgres" / "data" / "postmaster.pid").read_text().split()[0]),
        "redis": int((var_dir / "redis" / "redis.pid").read_text().split()[0]),
    }


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


async def write_and_read(urls: dict[str, str], *, write: bool) -> tuple[list[str], bytes | None]:
    """Write a table and a key when ``write``; the tables of the server's ``postgres`` database and the key."""
    conn = await asyncpg.connect(urls["DATABASE_URL"], database="postgres")
    client = Redis.from_url(urls["REDIS_URL"])
    try:
        if write:
            await conn.execute("CREATE TABLE kept (id int)")
            await client.set("kept", b"across runs")
        tables = [
            row["tablename"] for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE tablename = 'kept'")
        ]
        return tables, await client.get("kept")
    finally:
        await conn.close()
        await client.aclose()


def test_default_urls_that_do_not_answer_get_private_servers_kept_between_runs(var_dir: Path) -> None:
    pg_port, redis_port = free_port(), free_port()
    said: list[str] = []
    with provided([postgres(pg_port), redis(redis_port)], var_dir=var_dir, say=said.append) as urls:
        assert urls == {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/afterword",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        }
        pids = server_pids(var_dir)
        assert all(alive(pid) for pid in pids.values())
        assert asyncio.run(write_and_read(urls, write=True)) == (["kept"], b"across runs")
    assert not any(alive(pid) for pid in pids.values())
    assert port_is_free("127.0.0.1", pg_port)
    assert port_is_free("127.0.0.1", redis_port)
    assert said[0] == (
        f"  postgres started a private server: DATABASE_URL={urls['DATABASE_URL']}, "
        f"files in {var_dir}/postgres; it stops with make run"
    )
    assert f"REDIS_URL={urls['REDIS_URL']}, files in {var_dir}/redis" in said[1]
    assert "private server stopped" in said[2]
    assert "private server stopped" in said[3]

    # A second run starts the same cluster and the same Redis data, without a new initdb.
    version_file = var_dir / "postgres" / "data" / "PG_VERSION"
    made = version_file.stat().st_mtime_ns
    with provided([postgres(pg_port), redis(redis_port)], var_dir=var_dir, say=said.append) as urls:
        assert asyncio.run(write_and_read(urls, write=False)) == (["kept"], b"across runs")
    assert version_file.stat().st_mtime_ns == made


def test_a_default_port_taken_by_something_else_moves_the_private_server(var_dir: Path) -> None:
    pg_port, redis_port = free_port(), free_port()
    taken = []
    for port in (pg_port, redis_port):  # bound, never answering: connections are refused
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        taken.append(sock)
    said: list[str] = []
    try:
        with provided([postgres(pg_port), redis(redis_port)], var_dir=var_dir, say=said.append) as urls:
            moved_pg = int(urls["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])
            moved_redis = int(urls["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
            assert moved_pg not in (pg_port, 0)
            assert moved_redis not in (redis_port, 0)
            assert asyncio.run(write_and_read(urls, write=True)) == (["kept"], b"across runs")
    finally:
        for sock in taken:
            sock.close()
    assert f"on port {moved_pg} ({pg_port} is taken by a server that did not answer)" in said[0]
    assert f"on port {moved_redis} ({redis_port} is taken by a server that did not answer)" in said[1]


@pytest.mark.parametrize(("make", "setting"), [(postgres, "DATABASE_URL"), (redis, "REDIS_URL")])
def test_an_explicit_url_that_does_not_answer_is_named_and_nothing_starts(
    var_dir: Path, make: Callable[[int, str], Dependency], setting: str
) -> None:
    port = free_port()
    with (
        pytest.raises(DevServerError) as raised,
        provided([make(port, "the environment")], var_dir=var_dir, say=lambda _: None),
    ):
        pytest.fail("provided() yielded for a URL that does not answer")
    message = str(raised.value)
    assert f"DOWN at 127.0.0.1:{port}" in message
    assert f"{setting} is set in the environment, so make run starts no private server" in message
    assert list(var_dir.iterdir()) == []
    assert port_is_free("127.0.0.1", port)


def test_an_explicit_url_that_answers_is_used_as_it_is(var_dir: Path, redis_server: RedisServer) -> None:
    url = redis_server.url
    said: list[str] = []
    with provided([Dependency("redis", "REDIS_URL", url, ".env")], var_dir=var_dir, say=said.append) as urls:
        assert urls == {}
    assert said == [f"  redis    ok   at {url.removeprefix('redis://').removesuffix('/0')}"]
    assert list(var_dir.iterdir()) == []


def test_the_settings_say_which_urls_the_developer_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "database_url", "redis_url"):
        monkeypatch.delenv(name, raising=False)
    defaults = dependencies(Settings(_env_file=None), environ={})
    assert [(d.setting, d.url, d.set_in) for d in defaults] == [
        ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/afterword", None),
        ("REDIS_URL", "redis://127.0.0.1:6379/0", None),
    ]

    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URL=redis://127.0.0.1:6390/0\n")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5440/afterword")
    chosen = dependencies(Settings(_env_file=env_file), environ=os.environ)
    assert [(d.url, d.set_in) for d in chosen] == [
        ("postgresql://postgres@127.0.0.1:5440/afterword", "the environment"),
        ("redis://127.0.0.1:6390/0", ".env"),
    ]


def test_missing_binaries_are_named_with_what_to_install(
    var_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on the PATH
    monkeypatch.setattr(postgres_server, "SEARCHED", (str(tmp_path / "nowhere" / "*"),))
    monkeypatch.setattr(redis_server, "SEARCHED", (str(tmp_path / "nowhere"),))
    for dependency, named in [
        (postgres(free_port()), r"no PostgreSQL server binaries .*apt-get install postgresql"),
        (redis(free_port()), r"no redis-server .*apt-get install redis-server"),
    ]:
        with (
            pytest.raises(DevServerError, match=named),
            provided([dependency], var_dir=var_dir, say=lambda _: None),
        ):
            pytest.fail("provided() yielded without a server")


def test_a_leftover_server_is_stopped_unless_its_make_run_still_runs(var_dir: Path) -> None:
    port = free_port()
    leftover = PrivateRedis(var_dir / "redis", host="127.0.0.1", port=port)
    leftover.start()  # no owner recorded: what a make run killed outright leaves behind
    old_pid = leftover.pid
    assert old_pid is not None
    said: list[str] = []
    try:
        with provided([redis(port)], var_dir=var_dir, say=said.append) as urls:
            assert not alive(old_pid)
            assert int((var_dir / "redis" / "redis.pid").read_text()) != old_pid
            assert urls == {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    finally:
        leftover.stop()
    assert said[0] == f"  redis    stopped the private server an earlier make run left running (pid {old_pid})"

    # The server of a make run that still runs (the owner) is left alone, and used.
    owner = subprocess.Popen(["sleep", "60"])
    running = PrivateRedis(var_dir / "redis", host="127.0.0.1", port=port)
    running.start()
    (var_dir / "redis" / "owner.pid").write_text(f"{owner.pid}\n")
    said.clear()
    try:
        with provided([redis(port)], var_dir=var_dir, say=said.append) as urls:
            assert urls == {}
            assert running.pid is not None
            assert alive(running.pid)
    finally:
        running.stop()
        owner.kill()
        owner.wait()
    assert said == [f"  redis    ok   at 127.0.0.1:{port}"]


SCRIPT = """
import json, sys, time
from pathlib import Path
from services.devstack.servers import Dependency, provided

pg_port, redis_port = int(sys.argv[2]), int(sys.argv[3])
needed = [
    Dependency("postgres", "DATABASE_URL", f"postgresql://postgres@127.0.0.1:{pg_port}/afterword"),
    Dependency("redis", "REDIS_URL", f"redis://127.0.0.1:{redis_port}/0"),
]
with provided(needed, var_dir=Path(sys.argv[1]), say=lambda _: None) as urls:
    print(json.dumps(urls), flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_servers_stop_when_make_run_is_killed_outright(var_dir: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(var_dir), str(free_port()), str(free_port())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        pids: list[int] = []
        try:
            assert process.stdout is not None
            urls = json.loads(process.stdout.readline())
            assert set(urls) == {"DATABASE_URL", "REDIS_URL"}
            pids = list(server_pids(var_dir).values())
            assert all(alive(pid) for pid in pids)
            process.send_signal(signal.SIGKILL)  # no finally block runs
            process.wait()
            assert gone_within(pids, 30), "a private server outlived the make run that started it"
        finally:
            process.kill()
            for pid in filter(alive, pids):  # what a failure left running
                os.kill(pid, signal.SIGKILL)
