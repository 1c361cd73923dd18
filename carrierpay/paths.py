"""Where the SQL and carrier specs are: a checkout's top level, or inside the installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"none of these directories exist: {', '.join(map(str, candidates))}")


def sql_root() -> Path:
    """The `db/` directory: migrations, procedures, triggers and pgTAP tests."""
    return _first_existing(_PACKAGE.parent / "db", _PACKAGE / "_db")


def carriers_root() -> Path:
    """The `carriers/` directory holding one folder per onboarded carrier."""
    return _first_existing(_PACKAGE.parent / "carriers", _PACKAGE / "_carriers")
