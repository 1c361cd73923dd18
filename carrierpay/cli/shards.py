"""`carrierpay shards …`: a front database over power-of-two partitions (docs/sharding.md)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import typer

from carrierpay.cli.common import console, fail, print_document, print_rows, user_errors

app = typer.Typer(
    help=(
        "A sharded deployment: a PL/Proxy front database routing the SQL API to partition databases "
        "(one PostgreSQL cluster each).\n\n"
        "Examples:\n\n"
        "  carrierpay shards init --front URL --shard URL0 --shard URL1\n\n"
        "  carrierpay shards admin add_product --arg p_merchant=acme --arg p_code=gems --arg p_name=Gems\n\n"
        "  carrierpay shards check --front URL"
    ),
    no_args_is_help=True,
)

FrontOption = typer.Option(..., "--front", envvar="CARRIERPAY_FRONT_URL", show_envvar=True,
                           help="The front database, as its owner.")


def shard_errors(func: Callable) -> Callable:
    """A ShardError is one line and a hint, like the other known failures."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from carrierpay.shards import ShardError

        try:
            return func(*args, **kwargs)
        except ShardError as exc:
            fail(str(exc), hint="docs/sharding.md describes the layout and each procedure")

    return wrapper


@app.command()
@user_errors
@shard_errors
def init(
    front: str = FrontOption,
    shard: list[str] = typer.Option(..., "--shard", help="A partition's database, as its owner; partition k is "
                                                          "the k-th --shard. A power-of-two count."),
) -> None:
    """Migrate each shard as its partition, give the front's login a password on them, and build the front."""
    from carrierpay.shards import front as front_db

    twins = front_db.init(front, shard)
    console.print(f"front ready over {len(shard)} partitions; {len(twins)} api functions routed")


@app.command()
@user_errors
@shard_errors
def sync(front: str = FrontOption) -> None:
    """Re-apply the front's SQL and regenerate its api twins (run after migrating every shard)."""
    from carrierpay.shards import front as front_db

    twins = front_db.sync(front)
    print_rows(["function", "routed by"], [(f"api.{t.name}", t.route) for t in twins])


@app.command("map")
@user_errors
def show_map(front: str = FrontOption) -> None:
    """The cluster map: each partition and where it lives."""
    import psycopg

    from carrierpay import queries

    with psycopg.connect(front) as conn:
        rows = conn.execute(queries.SHARD_MAP).fetchall()
    print_rows(["partition", "connstr"], rows)


def _arguments(arg: list[str], json_arg: list[str]) -> dict:
    arguments: dict = {}
    for item, parse in [*((a, str) for a in arg), *((a, json.loads) for a in json_arg)]:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"argument {item[:40]!r} is not name=value")
        try:
            arguments[name] = parse(value)
        except json.JSONDecodeError as exc:
            fail(f"--json-arg {name}: line {exc.lineno}, column {exc.colno}: {exc.msg}")
    return arguments


@app.command()
@user_errors
@shard_errors
def admin(
    function: str = typer.Argument(..., help="The admin function, e.g. add_product"),
    arg: list[str] = typer.Option([], "--arg", help="name=value (text), e.g. p_merchant=acme"),
    json_arg: list[str] = typer.Option([], "--json-arg", help="name=JSON, e.g. p_spec='{...}' or p_fee=500"),
    front: str = FrontOption,
) -> None:
    """Run admin.<function> on every shard in one two-phase commit: everywhere or nowhere."""
    from carrierpay.shards import fanout

    print_document(fanout.apply_admin(front, function, _arguments(arg, json_arg)))


@app.command()
@user_errors
@shard_errors
def check(front: str = FrontOption) -> None:
    """Configuration the shards disagree on, and admin changes left prepared; exit 1 if any."""
    from carrierpay.shards import fanout

    drift = fanout.check(front)
    if drift.configuration:
        print_rows(["kind", "key", "missing_on", "versions"], drift.configuration, title="configuration drift")
    if drift.in_doubt:
        print_rows(["partition", "gid"], drift.in_doubt, title="prepared, not finished (carrierpay shards recover)")
    if not drift.clean:
        raise typer.Exit(1)
    console.print("no drift: every shard holds the same configuration")


@app.command()
@user_errors
@shard_errors
def recover(front: str = FrontOption) -> None:
    """Finish admin changes a stopped coordinator left prepared (only while no change is running)."""
    from carrierpay.shards import fanout

    done = fanout.recover(front)
    print_rows(["partition", "gid", "outcome"], done)


@app.command()
@user_errors
@shard_errors
def move(
    partition: int = typer.Option(..., "--partition"),
    source: str = typer.Option(..., "--from", help="The partition's database now, as a superuser"),
    target: str = typer.Option(..., "--to", help="An empty database on the new cluster, as a superuser"),
    front: str = FrontOption,
) -> None:
    """Move a partition to a new cluster: fence, copy roles and data, migrate, repoint the front."""
    from carrierpay.shards import move as mover

    counts = mover.move(front, partition, source, target)
    print_rows(["table", "rows"], sorted(counts.items()))
