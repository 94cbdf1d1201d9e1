"""Locates the SQL files: the repository's ``sql/`` or the copy bundled into a deploy folder."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


@cache
def sql_root() -> Path:
    """``feature_store/_sql`` when packaged for deployment, else the repository's ``sql/``."""
    for candidate in (_PACKAGE / "_sql", _PACKAGE.parent.parent / "sql"):
        if (candidate / "postgres").is_dir():
            return candidate
    raise FileNotFoundError("no sql/ directory beside the feature_store package")


@cache
def query(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return (sql_root() / "queries" / f"{name}.sql").read_text()
