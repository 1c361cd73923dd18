"""Test harness: one embedded PostgreSQL per run, one migrated template, a fresh copy per test.

`pytest` needs the pgTAP, plpgsql_check and PL/Proxy server extensions. When they are missing we install
them if we are root, and otherwise stop at once with the apt-get line to run: the SQL tests are
never silently skipped.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from carrierpay import migrate
from carrierpay.embedded import SUPERUSER, SUPPORTED_MAJOR, EmbeddedCluster, create_available_extensions

REQUIRED_DEBIAN_PACKAGES = {
    "pgtap": f"postgresql-{SUPPORTED_MAJOR}-pgtap",
    "plpgsql_check": f"postgresql-{SUPPORTED_MAJOR}-plpgsql-check",
    "plproxy": f"postgresql-{SUPPORTED_MAJOR}-plproxy",  # the front database of tests/shards
}
TEMPLATE_DB = "carrierpay_template"
TEST_EXTENSIONS = ("pgcrypto", "pgtap", "plpgsql_check")


def _extension_dir() -> Path:
    from carrierpay.embedded import find_bindir

    pg_config = find_bindir() / "pg_config"
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip()) / "extension"
    return Path(f"/usr/share/postgresql/{SUPPORTED_MAJOR}/extension")


def _missing_packages() -> list[str]:
    ext_dir = _extension_dir()
    return [pkg for ext, pkg in REQUIRED_DEBIAN_PACKAGES.items() if not (ext_dir / f"{ext}.control").exists()]


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = _missing_packages()
    if not missing:
        return
    install_line = f"apt-get install -y {' '.join(missing)}"
    if os.geteuid() != 0:
        pytest.exit(f"the SQL tests need {', '.join(missing)}; run as root: {install_line}", returncode=4)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True)
    result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True, text=True)
    if result.returncode != 0 or _missing_packages():
        pytest.exit(f"could not install {', '.join(missing)}: {result.stderr.strip()[-500:]}\n"
                    f"run: {install_line}", returncode=4)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests on a fresh event loop each, with a ceiling so a hang fails instead of blocking."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), timeout=90))
    return True


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway embedded cluster (fsync off) in a directory the postgres user can reach."""
    home = Path(tempfile.mkdtemp(prefix="carrierpay-test-", dir=os.environ.get("CARRIERPAY_TEST_TMPDIR", "/tmp")))
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home, fast=True)
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def _make_template(cluster: EmbeddedCluster, name: str) -> str:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{name}" template template0 encoding utf8')
    url = cluster.url(name)
    create_available_extensions(url, TEST_EXTENSIONS)
    migrate.migrate(url)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"alter database \"{name}\" with is_template true allow_connections false")
    return name


@pytest.fixture(scope="session")
def template_db(pg_cluster) -> str:
    """A database migrated to head once per run, with pgTAP and plpgsql_check; tests copy it."""
    return _make_template(pg_cluster, TEMPLATE_DB)


@pytest.fixture
def db_url(pg_cluster, template_db):
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(
        user=SUPERUSER,
        host="127.0.0.1",
        port=pg_cluster.port,
        dbname=name,
        template_dbname=template_db,
        password=pg_cluster.password,
    )
    janitor.init()
    # Database privileges do not travel with CREATE DATABASE … TEMPLATE; migrate re-applies them.
    migrate.migrate(pg_cluster.url(name))
    try:
        yield pg_cluster.url(name)
    finally:
        janitor.drop()


@pytest.fixture
def empty_db_url(pg_cluster):
    """A fresh database with nothing migrated."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}" template template0 encoding utf8')
    try:
        yield pg_cluster.url(name)
    finally:
        with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


# Modules marked sql_api run the tests that take these fixtures (and no single-node one) a second time
# through a front over two partitions (tests/front_kit.py).
THROUGH_THE_FRONT = {"owner", "merchant", "attacker", "conn", "api_target"}
SINGLE_NODE = {"db_url", "world_url", "pg_cluster", "empty_db_url", "world", "world_conn", "template_db"}


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("sql_api") is None:
        return
    wanted = set(inspect.signature(metafunc.function).parameters)
    if wanted & THROUGH_THE_FRONT and not wanted & SINGLE_NODE:
        metafunc.parametrize("api_target", ["node", "front"], indirect=True)


@pytest.fixture
def world_url(db_url):
    """A fresh migrated database with the test world (db/tests/fixtures/world.sql) committed in it,
    usable from many connections."""
    from tests.core.world import load_world

    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
    return db_url


@pytest.fixture
def owner(request, api_target):
    """The owner's autocommit connection to the world (through the front: tests/front_kit.py)."""
    if api_target == "front":
        from tests.front_kit import OwnerThroughFront

        with OwnerThroughFront.connect(request.getfixturevalue("front_world")) as conn:
            yield conn
        return
    with psycopg.connect(request.getfixturevalue("world_url"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def api_target(request) -> str:
    """Where the test's SQL-API calls go: a single node, or a front over partitions."""
    return getattr(request, "param", "node")


@pytest.fixture(scope="session")
def api_front():
    """A front over two partitions (each its own cluster), for the whole run."""
    from tests.front_kit import ApiFront

    started = ApiFront.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def front_partitions(api_front):
    """Fresh, empty partition databases behind the front, for one test."""
    from tests.front_kit import FrontWorld

    urls = api_front.fresh_partitions()
    try:
        yield FrontWorld(api_front, urls)
    finally:
        api_front.drop(urls)


@pytest.fixture
def front_world(front_partitions):
    """The test world on fresh partitions behind the front."""
    from tests.front_kit import load_world_everywhere

    load_world_everywhere(front_partitions.shard_urls)
    front_partitions.register_merchants()
    return front_partitions


@pytest.fixture
def conn(request, api_target):
    """An autocommit connection to the test's own database (through the front: the owner's, tests/front_kit.py)."""
    if api_target == "front":
        from tests.front_kit import OwnerThroughFront

        world = request.getfixturevalue("front_partitions")
        with OwnerThroughFront.connect(world) as connection:
            yield connection
        return
    with psycopg.connect(request.getfixturevalue("db_url"), autocommit=True) as connection:
        yield connection


@pytest.fixture
def node_urls(request, api_target) -> list[str]:
    """The test's databases, as its daemons reach them: the node (`db_url`), or every partition behind the
    front (`front_partitions`: daemons and the scheduler run per partition, docs/sharding.md)."""
    if api_target == "front":
        return request.getfixturevalue("front_partitions").shard_urls
    return [request.getfixturevalue("db_url")]


@pytest.fixture
def api_connect(request, api_target):
    """A factory of autocommit connections that make the test's api calls from connections of their own
    (racing ones): the owner's to the node, or the merchant acme's login on the front (noting where
    each call goes, tests/front_kit.py)."""
    if api_target == "front":
        from tests.front_kit import ThroughFront

        world = request.getfixturevalue("front_world")
        url = world.api_front.login_url("acme")
        return lambda: ThroughFront(psycopg.connect(url, autocommit=True), world)
    url = request.getfixturevalue("world_url")
    return lambda: psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """Throwaway certificates made for this run (tests/tls_kit.py): a CA, a server certificate for
    127.0.0.1, a client certificate, and an unrelated CA."""
    from tls_kit import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))
