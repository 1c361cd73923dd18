"""`carrierpay db …`: the embedded PostgreSQL cluster and migrations."""

from __future__ import annotations

import typer

from carrierpay import config, db
from carrierpay.cli.common import DatabaseUrlOption, console, fail, user_errors

app = typer.Typer(
    help=(
        "Run the embedded PostgreSQL and migrate the schema.\n\n"
        "Examples:\n\n"
        "  carrierpay db up && carrierpay db migrate\n\n"
        "  psql \"$(carrierpay db url)\" -c '\\dn'\n\n"
        "With CARRIERPAY_DATABASE_URL (or --database-url) set, commands use that server and start nothing."
    ),
    no_args_is_help=True,
)


@app.command()
@user_errors
def up(
    shards: int = typer.Option(
        0, "--shards",
        help="Instead, start a sharded deployment on this machine: a front and this many partitions (a power "
             "of two), each its own embedded cluster, migrated and routed (docs/sharding.md)."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Create (first time) and start the embedded cluster, and create the database."""
    if shards:
        _up_sharded(shards, database_url)
        return
    where = db.target(database_url)
    if where.embedded is None:
        console.print(f"using the configured server; nothing to start ({db.redact_url(where.url)})")
        return
    cluster = where.embedded
    if cluster.init():
        console.print(f"created {cluster.describe_location()}")
    if cluster.start():
        console.print(f"started PostgreSQL on port {cluster.port} (socket dir {cluster.socket_dir})")
    else:
        console.print(f"already running on port {cluster.port}")
    if cluster.ensure_database(config.DATABASE_NAME):
        console.print(f"created database {config.DATABASE_NAME}")
    console.print(cluster.url(config.DATABASE_NAME))


def _up_sharded(partitions: int, database_url: str | None) -> None:
    from carrierpay.shards import ShardError, local

    if database_url:
        fail("--shards starts embedded clusters; it does not use a configured server",
             hint="unset CARRIERPAY_DATABASE_URL, or build the front over your servers with carrierpay shards init")
    try:
        front_url, shard_urls = local.up(config.home(), partitions, say=console.print)
    except ShardError as exc:
        fail(str(exc), hint="carrierpay db down --shards stops them; docs/sharding.md describes the layout")
    console.print(f"front (merchants and operators connect here): {front_url}")
    for partition, url in enumerate(shard_urls):
        console.print(f"partition {partition} (its daemons connect here): {url}")


@app.command()
@user_errors
def down(
    shards: bool = typer.Option(False, "--shards", help="Stop the front and partitions of `db up --shards`."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Stop the embedded cluster (its data stays)."""
    if shards:
        from carrierpay.shards import local

        console.print(f"stopped {local.down(config.home())} cluster(s)")
        return
    where = db.target(database_url)
    if where.embedded is None:
        fail("a configured server is not ours to stop", hint="unset CARRIERPAY_DATABASE_URL to manage the embedded one")
    console.print("stopped" if where.embedded.stop() else "not running")


@app.command()
@user_errors
def status(database_url: str | None = DatabaseUrlOption) -> None:
    """Show whether the database is up and whether migrations are pending."""
    where = db.target(database_url)
    if where.embedded is not None:
        st = where.embedded.status()
        if st.running:
            console.print(f"embedded cluster: running (data {st.datadir}, port {st.port}, pid {st.pid})")
        else:
            console.print(f"embedded cluster: stopped (data {st.datadir}); start it with: carrierpay db up")
        if not st.running:
            raise typer.Exit(1)
    from carrierpay import migrate

    todo = migrate.plan(where.url)
    console.print("schema: up to date" if todo.up_to_date else
                  f"schema: {len(todo.pending_revisions)} revision(s), {len(todo.changed_files)} file(s) pending")


@app.command()
@user_errors
def url(
    database: str | None = typer.Option(None, "--database", "-d",
                                        help="Another database on the same server, e.g. carrierpay_demo."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Print the connection URL (for psql, scripts, CARRIERPAY_DATABASE_URL)."""
    found = db.target(database_url).url
    if database:
        from sqlalchemy.engine import make_url

        found = make_url(found).set(database=database).render_as_string(hide_password=False)
    typer.echo(found)


@app.command("migrate")
@user_errors
def migrate_cmd(
    check: bool = typer.Option(False, "--check", help="Only list what is pending; exit 1 if anything is."),
    lock_timeout: str | None = typer.Option(
        None, "--lock-timeout",
        help="Give up (and change nothing) when a table lock is not granted within this PostgreSQL "
             "interval, e.g. 2s, instead of queueing behind the payment traffic."),
    partition: int | None = typer.Option(
        None, "--partition",
        help="Make this database that partition (shard) of a sharded deployment: its ids come from the "
             "partition's own range (docs/sharding.md). A database keeps its partition for good."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Run alembic upgrade head and re-apply db/procedures and db/triggers, in one transaction."""
    from carrierpay import migrate

    target_url = db.running_url(database_url)
    if check:
        todo = migrate.plan(target_url)
        for rev in todo.pending_revisions:
            console.print(f"pending revision {rev}")
        for name in todo.changed_files:
            console.print(f"pending file {name}")
        if not todo.up_to_date:
            raise typer.Exit(1)
        console.print("up to date")
        return
    done = migrate.migrate(target_url, lock_timeout=lock_timeout, partition=partition)
    if done.up_to_date:
        console.print("up to date; nothing changed")
    else:
        console.print(f"applied {len(done.pending_revisions)} revision(s); "
                      f"re-applied SQL files ({len(done.changed_files)} changed)")
