"""Shared fixtures: every test works on temporary databases and folders."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import migrate_db  # noqa: E402


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
