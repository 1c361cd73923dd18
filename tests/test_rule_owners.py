"""docs/architecture.md, "Where is the rule for…", names the owners that exist.

Each row names the file (and the functions, tables or names in it) to read and to change for one rule.
A file that was moved or a function that was renamed would send a reader to nothing: every path the
table names exists, every SQL name it names is defined under db/, and every Python name it gives with a
module is in that module.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Where is the rule for…"
SQL_NAME = re.compile(r"^(cp|api|admin|adapter|report|sched|front|gateway)\.\w+$")
PYTHON_NAME = re.compile(r"^[A-Za-z_]\w*(\.\w+)?$")


def rule_rows() -> list[tuple[str, list[str]]]:
    """(rule, the backticked names of its owner cell) for every row of the table."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("rule", "---"):
            continue
        rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


ROWS = rule_rows()


@cache
def sql_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "db").rglob("*")) if p.suffix in (".sql", ".py"))


def test_the_table_has_rows():
    assert len(ROWS) >= 40


@pytest.mark.parametrize(("rule", "names"), ROWS, ids=[rule[:60] for rule, _ in ROWS])
def test_every_owner_a_row_names_exists(rule, names):
    paths = [n for n in names if "/" in n and "<" not in n and " " not in n]
    missing = [p for p in paths if not (ROOT / p.rstrip("/")).exists()]
    assert missing == [], f"{rule}: no such file {missing}"

    db = sql_sources()
    undefined = [n for n in names if SQL_NAME.match(n) and not re.search(rf"\b{re.escape(n)}\b", db)]
    assert undefined == [], f"{rule}: not defined under db/: {undefined}"

    modules = [ROOT / p for p in paths if p.endswith(".py")]
    if modules:
        source = "\n".join(m.read_text() for m in modules)
        python_names = [n for n in names if "/" not in n and PYTHON_NAME.match(n) and not SQL_NAME.match(n)]
        absent = [n for n in python_names if not re.search(rf"\b{re.escape(n.split('.')[-1])}\b", source)]
        assert absent == [], f"{rule}: not in {[str(m.relative_to(ROOT)) for m in modules]}: {absent}"
