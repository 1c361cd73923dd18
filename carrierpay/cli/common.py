"""What every command group shares: the console, options and turning errors into one-line messages."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable

import psycopg
import typer
from rich.console import Console

from carrierpay import db, errors, queries
from carrierpay.embedded import ClusterError, hint_for_server_error
from carrierpay.errors import MigrationError

console = Console()
err_console = Console(stderr=True)

DatabaseUrlOption = typer.Option(
    None,
    "--database-url",
    envvar="CARRIERPAY_DATABASE_URL",
    help="Use this existing PostgreSQL server instead of the embedded cluster.",
    show_envvar=True,
)

MetricsPortOption = typer.Option(None, "--metrics-port", min=0, metavar="PORT",
                                 help="Serve Prometheus metrics on /metrics at this port (0: any free port).")
MetricsHostOption = typer.Option("127.0.0.1", "--metrics-host", help="Address the metrics endpoint binds.")

state = {"verbose": False}


def _sqlalchemy_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's DBAPIError, only if a command already imported it (it is slow to import)."""
    module = sys.modules.get("sqlalchemy.exc")
    return (module.DBAPIError,) if module else ()


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    """One line of error and one of hint: never wrapped by us, and brackets in them are not markup."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", cell_text(message)), soft_wrap=True)
    if hint:
        err_console.print(Text.assemble(("hint:", "dim"), " ", cell_text(hint)), soft_wrap=True)
    raise typer.Exit(code)


# What a query on a database that was never migrated raises.
NOT_MIGRATED = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)


def user_errors(func: Callable) -> Callable:
    """Report known failures as one line and a hint (a traceback only with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except errors.CarrierpayError as exc:
            fail(f"{exc.code}: {exc}", hint="error codes are listed in docs/sql-api.md")
        except (ClusterError, MigrationError, psycopg.Error, *_sqlalchemy_errors()) as exc:
            if state["verbose"]:
                err_console.print_exception()
            if getattr(exc, "orig", None) is not None:  # SQLAlchemy wraps the driver's error
                exc = exc.orig
            hint = getattr(exc, "hint", None) or hint_for_server_error(str(exc))
            if isinstance(exc, psycopg.OperationalError) and hint is None:
                hint = missing_database_hint(exc)
            if isinstance(exc, psycopg.OperationalError) and hint is None:
                hint = "is the database running? try: carrierpay db status"
            if isinstance(exc, NOT_MIGRATED) and hint is None:
                hint = ("this database has no carrierpay schema yet: run `carrierpay db migrate`, or point "
                        "--database-url / CARRIERPAY_DATABASE_URL at a migrated one (the demo's is carrierpay_demo)")
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(message, hint)

    return wrapper


MISSING_DATABASE = re.compile(r'database "([^"]+)" does not exist')
MAX_DATABASES_PROBED = 30


def missing_database_hint(exc: psycopg.Error) -> str | None:
    """When the server answered that the database does not exist: the carrierpay databases it
    does have, and how to choose one (the server is up, so "is it running?" would mislead)."""
    match = MISSING_DATABASE.search(str(exc))
    pgconn = getattr(exc, "pgconn", None)
    if match is None or pgconn is None:
        return None
    missing = match.group(1)
    try:
        params = {o.keyword.decode(): o.val.decode() for o in pgconn.info if o.val is not None}
    except (psycopg.Error, AttributeError, UnicodeDecodeError):
        return None
    params.pop("dbname", None)
    found = carrierpay_databases(params)
    how = "choose one with --database-url or CARRIERPAY_DATABASE_URL"
    if found:
        example = found[0]
        return (f"the server is up but has no database {missing!r}; its carrierpay database(s): "
                f"{', '.join(found)}; {how}, e.g. export CARRIERPAY_DATABASE_URL=\"$(carrierpay db url "
                f"--database {example})\"")
    none = "" if found is None else " and no other carrierpay database"
    return (f"the server is up but has no database {missing!r}{none}; create it with `carrierpay db up && "
            f"carrierpay db migrate` (embedded cluster), or {how}")


def carrierpay_databases(params: dict[str, str]) -> list[str] | None:
    """Migrated carrierpay databases on the server these connection parameters reach (None when
    the server cannot be asked)."""
    from psycopg.conninfo import make_conninfo

    params = params | {"connect_timeout": "5"}
    names = None
    for admin_database in ("postgres", "template1"):
        try:
            with psycopg.connect(make_conninfo(**params, dbname=admin_database), autocommit=True) as conn:
                names = [row[0] for row in conn.execute(queries.LIST_DATABASES)]
            break
        except psycopg.Error:
            continue
    if names is None:
        return None
    found = []
    for name in names[:MAX_DATABASES_PROBED]:
        try:
            with psycopg.connect(make_conninfo(**params, dbname=name), autocommit=True) as conn:
                if conn.execute(queries.IS_CARRIERPAY_DATABASE).fetchone()[0]:
                    found.append(name)
        except psycopg.Error:
            continue
    return found


def call_sql(database_url: str | None, query: str, params: dict | list | None = None,
             before: tuple[str, ...] = ()) -> list[tuple]:
    """Run one named query on the running database (after the named queries `before`, on the same
    session); our SQLSTATEs become CarrierpayError."""
    url = db.running_url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            for setup in before:
                conn.execute(setup)
            return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            translated = errors.translate(exc)
            if translated is exc:
                raise
            raise translated from exc


def print_document(document: dict) -> None:
    """A jsonb result of the SQL API, as pretty JSON."""
    console.print_json(data=document)


FormatOption = typer.Option("table", "--format", help="table, csv or json (csv and json carry every column).")

# A table wider than the console would cut cells ("9,68…"); instead the rows are split into
# narrower tables that repeat the identifying columns, and when even that cannot fit (or there is
# one record) each record becomes a block of "field: value" lines.
MAX_KEY_COLUMNS = 3


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table", title: str | None = None, *,
               out: Console | None = None, labels: list[str] | None = None, wrap: tuple[str, ...] = (),
               records: bool = False) -> None:
    """Rows for people (never a cut value, at any console width) or as CSV / JSON for scripts.

    `labels` are shorter table headers (default: the column names, `_` read as a space so a header
    may take two lines); columns named in `wrap` hold prose that may wrap between words; `records`
    asks for the "field: value" layout whatever the width.
    """
    out = out or console
    if fmt not in ("table", "csv", "json"):
        fail(f"unknown format {fmt!r}", hint="use table, csv or json")
    if fmt == "json":
        print_json(as_records(columns, rows), out)
    elif fmt == "csv":
        import csv

        writer = csv.writer(out.file, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_value(v) for v in row] for row in rows])
    else:
        _print_layout(out, columns, rows, title, labels or [c.replace("_", " ") for c in columns], set(wrap),
                      records)


def as_records(columns: list[str], rows: list[tuple]) -> list[dict]:
    return [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def print_json(data, out: Console | None = None) -> None:
    """Plain JSON on stdout (no colours, numbers stay numbers) for scripts."""
    import json

    (out or console).file.write(json.dumps(data, default=_json_value, indent=2) + "\n")


def _plain(value):
    from rich.text import Text

    return value.plain if isinstance(value, Text) else value


def _json_value(value):
    from datetime import date, datetime, time, timedelta
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def _csv_value(value):
    import json

    value = _plain(value)
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    return "" if value is None else value


NUMBER_TEXT = re.compile(r"-?[0-9][0-9,]*(\.[0-9]+)?%?")


def _is_number(value) -> bool:
    """Numbers, and numbers a caller already formatted ("1,234", "66.7%"): aligned right."""
    from decimal import Decimal

    if isinstance(value, str):
        return NUMBER_TEXT.fullmatch(value) is not None
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


# Terminal control characters (ESC starts colour, title and screen-clearing sequences) in values that
# come from carriers or merchants are shown escaped, so data can never drive the operator's terminal.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def cell_text(value):
    """What a person reads in a cell: a Text (markup in data is never interpreted, control characters
    are shown escaped)."""
    import json
    from datetime import datetime, timedelta

    from rich.text import Text

    if isinstance(value, Text):
        return value
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, timedelta):
        text = str(timedelta(seconds=round(value.total_seconds())))
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    return Text(CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _longest_line(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.split("\n")), default=0)


def _longest_word(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(word) for word in text.split()), default=0)


def _print_layout(out: Console, columns: list[str], rows: list[tuple], title: str | None, labels: list[str],
                  wrap: set[str], records: bool) -> None:
    from rich.text import Text

    if title:
        out.print(Text(title, style="bold"), soft_wrap=True)
    if not rows:
        out.print("(no rows)")
        return
    cells = [[cell_text(value) for value in row] for row in rows]
    if records:
        _print_records(out, columns, cells)
        return
    specs = []
    for i, name in enumerate(columns):
        texts = [row[i].plain for row in cells]
        numeric = any(_is_number(row[i]) for row in rows) and all(
            row[i] is None or _is_number(row[i]) for row in rows)
        prose = name in wrap
        value_width = max(_longest_word(t) if prose else _longest_line(t) for t in texts)
        specs.append({"label": labels[i], "numeric": numeric, "prose": prose, "value": value_width,
                      "full": max(value_width, _longest_line(labels[i])),
                      "narrow": max(value_width, _longest_word(labels[i]), 1)})
    everything = list(range(len(columns)))
    for width in ("full", "narrow"):
        if _table_width(out, specs, everything, width) <= out.width:
            out.print(_table(specs, everything, cells, width))
            return
    groups = _column_groups(out, specs, cells) if len(rows) > 1 else None
    if groups is None:
        _print_records(out, columns, cells)
        return
    for n, group in enumerate(groups):
        if n:
            out.print()
        out.print(_table(specs, group, cells, "narrow"))


def _table(specs: list[dict], chosen: list[int], cells: list[list], width: str):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for i in chosen:
        spec = specs[i]
        justify = "right" if spec["numeric"] else "left"
        if spec["prose"]:  # may wrap between words, never below its longest word
            table.add_column(spec["label"], justify=justify, min_width=spec[width], overflow="fold")
        else:
            table.add_column(spec["label"], justify=justify, width=spec[width], overflow="fold")
    for row in cells:
        table.add_row(*[row[i] for i in chosen])
    return table


def _table_width(out: Console, specs: list[dict], chosen: list[int], width: str) -> int:
    """The narrowest the table can be drawn without cutting a value, as rich measures it."""
    from rich.measure import Measurement

    narrowest = [{**spec, "prose": False} for spec in specs]  # prose at its narrowest, i.e. fixed
    unbounded = out.options.update_width(100_000)  # a measure is capped at the width it is given
    return Measurement.get(out, unbounded, _table(narrowest, chosen, [], width)).maximum


def _column_groups(out: Console, specs: list[dict], cells: list[list]) -> list[list[int]] | None:
    """Tables of a few columns each, each repeating the shortest leading columns that tell rows
    apart; None when that leaves no room (then a vertical layout reads better)."""
    count = len(specs)
    for key_size in range(1, min(MAX_KEY_COLUMNS, count - 1) + 1):
        if len({tuple(row[i].plain for i in range(key_size)) for row in cells}) == len(cells):
            break
    else:
        return None
    key = list(range(key_size))
    rest = list(range(key_size, count))
    if any(_table_width(out, specs, key + [i], "narrow") > out.width for i in rest):
        return None
    greedy = _fill(out, specs, key, rest, len(rest))
    # As few tables as the greedy fill needs, but with the columns spread evenly over them.
    even = _fill(out, specs, key, rest, -(-len(rest) // len(greedy)))
    groups = even if len(even) == len(greedy) else greedy
    if len(groups) > 1 and len(rest) / len(groups) < 2:  # one value per table: read it as records
        return None
    return [key + group for group in groups]


def _fill(out: Console, specs: list[dict], key: list[int], rest: list[int], most: int) -> list[list[int]]:
    """Columns in order into tables of at most `most` columns besides the key, each as wide as fits."""
    groups: list[list[int]] = [[]]
    for i in rest:
        current = groups[-1]
        if current and (len(current) >= most or _table_width(out, specs, key + current + [i], "narrow") > out.width):
            groups.append([i])
        else:
            current.append(i)
    return groups


def _print_records(out: Console, columns: list[str], cells: list[list]) -> None:
    """One block per record, a "field: value" line per column; long values are not wrapped by us."""
    from rich.text import Text

    name_width = max(len(name) for name in columns)
    for n, row in enumerate(cells):
        if n:
            out.print()
        for name, value in zip(columns, row, strict=True):
            lines = value.split("\n") if "\n" in value.plain else [value]
            head = Text(f"{name:>{name_width}}: ", style="dim")
            out.print(Text.assemble(head, lines[0]), soft_wrap=True)
            for line in lines[1:]:
                out.print(Text.assemble(" " * (name_width + 2), line), soft_wrap=True)
