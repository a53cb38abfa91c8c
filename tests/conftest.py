"""Shared fixtures: every test works on temporary databases and folders."""
from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helpers import stop_started  # noqa: E402

import migrate_db  # noqa: E402

# A shell starting the suite in the background (`pytest &` in a script, nohup) hands it
# SIGINT or SIGHUP ignored, and exec keeps an ignored signal ignored: the scripts the tests
# stop with these signals would never see them. The suite's processes get the defaults back.
for _signum, _default in ((signal.SIGINT, signal.default_int_handler),
                          (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(_signum, _default)

# The suite starts some 400 Python processes. Where PYTHONDONTWRITEBYTECODE is set (as on
# this project's machines) each of them compiled the suite and its test helpers from source
# again: about a fifth of the suite's CPU time. They write their bytecode, as Python does by
# default, into __pycache__ beside the sources (ignored by git) and read it from there.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The longest tests (thousands of messages, SIGKILL loops) start first, so that with several
# workers none of them is left running alone at the end of the suite.
LONGEST_FIRST = ("test_clone_two_vps.py", "test_clone_kill.py")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per CPU. Many tests spend part of their time waiting on a
    started process or a FloodWait, which another worker fills (on 2 cores, with scripts
    started from the fork server: 4 workers about 10 % faster than 3, 5 no faster than 4)."""
    return max(2, (os.cpu_count() or 1) * 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)   # stable: others keep order


@pytest.fixture(autouse=True)
def _stop_started_processes():
    """Whatever a test started with helpers.start and left running is killed after it."""
    yield
    stop_started()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a database that does not exist yet."""
    return tmp_path / "shared" / "test.db"


@pytest.fixture
def db(db_path: Path):
    """A connection to a fresh suite database (schema applied), closed after the test."""
    conn = migrate_db.connect(db_path)
    yield conn
    conn.close()


# ----------------------------------------------------------------------------- simulator
# A simulated Telegram world per test (telegram_sim.py), account folders on it, and
# connected Telethon clients over it. See telegram_sim's module docstring for the World API.

@pytest.fixture
def sim_world(tmp_path: Path):
    """An empty simulated world at tmp_path/world.db (random_id mode "original")."""
    import telegram_sim

    world = telegram_sim.World.create(tmp_path / "world.db")
    yield world
    world.close()


@pytest.fixture
def sim_account_folder(tmp_path: Path, sim_world):
    """Factory: make_folder(name, *, username=None, extra_env=None) -> Path.

    Adds the account to the world (if new) and makes its authorised folder at
    tmp_path/sessions/NAME (.env with TELEGRAM_SIMULATOR, NAME.session).
    """
    def make_folder(name: str, *, username: str | None = None,
                    extra_env: dict | None = None) -> Path:
        known = {account["name"] for account in sim_world.accounts()}
        if name not in known:
            sim_world.add_account(name, username=username)
        return sim_world.make_session_folder(tmp_path / "sessions" / name, name,
                                             extra_env=extra_env)
    return make_folder


@pytest.fixture
async def sim_client(sim_world):
    """Factory: await make_client(folder, **TelegramClient kwargs) -> connected client.

    The client uses the folder's NAME.session over the world; disconnected after the test.
    """
    from telethon import TelegramClient

    import telegram_sim

    clients = []

    async def make_client(folder: Path, **kwargs) -> TelegramClient:
        client = TelegramClient(str(Path(folder) / Path(folder).name),
                                telegram_sim.SIM_API_ID, "0" * 32, **kwargs)
        telegram_sim.attach(client, sim_world.path)
        await client.connect()
        clients.append(client)
        return client

    yield make_client
    for client in clients:
        if client.is_connected():           # a test may have disconnected it already
            await client.disconnect()


# ----------------------------------------------------------------------------- PostgreSQL
# One throw-away PostgreSQL cluster per test session (tests/pg_cluster.py), or the server
# of PG_TEST_URL; each test gets its own new database. Without a server the PostgreSQL tests
# skip with one line saying how to run them, except where PG_TESTS_REQUIRED=1 (CI): there
# they fail.

@pytest.fixture(scope="session")
def pg_server():
    """The URL of a PostgreSQL server the tests may create databases on."""
    import pg_cluster

    def unavailable(reason: str):
        if os.environ.get("PG_TESTS_REQUIRED") == "1":
            pytest.fail(f"PostgreSQL tests are required here (PG_TESTS_REQUIRED=1): {reason}")
        pytest.skip(pg_cluster.HOW_TO_RUN)

    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -r requirements.txt)")
    if os.environ.get("PG_TEST_URL"):
        yield os.environ["PG_TEST_URL"]
        return
    try:
        with pg_cluster.cluster() as url:
            yield url
    except pg_cluster.ClusterUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def pg_url(pg_server: str):
    """A URL of a new, empty PostgreSQL database, dropped after the test."""
    import pg_cluster
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.database_url(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
