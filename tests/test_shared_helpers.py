"""The helpers every script shares, owned once by migrate_db.py: stored times, files
replaced whole, text tables."""
import argparse
import importlib
import os
import sqlite3
import stat
import sys
from datetime import datetime, timedelta, timezone

import helpers
import pytest

import migrate_db

UTC = timezone.utc


def test_stored_times_are_fixed_width_utc_with_microseconds():
    whole_second = datetime(2026, 12, 3, 8, 40, 1, tzinfo=UTC)
    assert migrate_db.utc_text(whole_second) == "2026-12-03T08:40:01.000000+00:00"
    elsewhere = datetime(2026, 12, 3, 10, 40, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert migrate_db.utc_text(elsewhere) == "2026-12-03T08:40:01.123456+00:00"
    now = migrate_db.parse_utc(migrate_db.utc_text())
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_text_order_is_time_order():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    moments = [start + timedelta(microseconds=step ** 3) for step in range(0, 300, 7)]
    texts = [migrate_db.utc_text(moment) for moment in moments]
    assert len({len(text) for text in texts}) == 1
    assert sorted(texts) == texts


def test_parse_reads_the_suite_s_times_and_earlier_systems_times():
    moment = datetime(2026, 12, 3, 8, 40, 1, 5, tzinfo=UTC)
    assert migrate_db.parse_utc(migrate_db.utc_text(moment)) == moment
    # an earlier system's SQLite CURRENT_TIMESTAMP text (NOTES.md): UTC without a zone
    legacy = migrate_db.parse_utc("2026-11-21 22:00:00")
    assert legacy == datetime(2026, 11, 21, 22, tzinfo=UTC)
    assert migrate_db.parse_utc("2026-11-21T22:00:00") == legacy
    with pytest.raises(ValueError):
        migrate_db.parse_utc("yesterday")


def test_the_legacy_time_migration_writes_what_the_writer_writes():
    legacy = "2026-11-21 22:00:00"
    conn = sqlite3.connect(":memory:")
    rewritten = conn.execute(
        f"SELECT {migrate_db.LEGACY_TIME_AS_ISO.format(column='?')}", (legacy,)).fetchone()[0]
    assert rewritten == migrate_db.utc_text(migrate_db.parse_utc(legacy))


def test_file_stamp_is_a_utc_name_part():
    stamp = migrate_db.file_stamp()
    assert datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")


def test_atomic_write_replaces_the_file_whole_and_keeps_its_mode(tmp_path):
    target = tmp_path / "data.json"
    migrate_db.write_atomically(target, "first\n")
    plain = tmp_path / "plain"
    plain.write_text("")                     # what open() makes under this umask
    assert target.read_text() == "first\n"
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    target.chmod(0o640)
    migrate_db.write_atomically(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["data.json", "plain"]


def test_atomic_write_with_a_mode_is_private_from_the_start(tmp_path):
    secret = tmp_path / ".env"
    secret.write_text("old\n")
    secret.chmod(0o644)
    old_umask = os.umask(0)
    try:
        migrate_db.write_atomically(secret, "TG_API_HASH=x\n", mode=0o600)
    finally:
        os.umask(old_umask)
    assert secret.read_text() == "TG_API_HASH=x\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "topic_map.json"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        migrate_db.write_atomically(target, "half \ud800 written")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["topic_map.json"]
    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        migrate_db.write_atomically(folder, "x")
    assert sorted(os.listdir(tmp_path)) == ["taken", "topic_map.json"]


def test_atomic_write_by_a_function_keeps_the_old_file_when_it_refuses(tmp_path):
    target = tmp_path / "s1.session"
    target.write_bytes(b"old")

    def refuse(partial):
        partial.write_bytes(b"half a copy")
        raise ValueError("the copy is not usable")
    with pytest.raises(ValueError):
        migrate_db.write_atomically(target, refuse, mode=0o600)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["s1.session"]

    def copy(partial):
        with sqlite3.connect(partial) as conn:
            conn.execute("CREATE TABLE sessions (dc_id INTEGER)")
    migrate_db.write_atomically(target, copy, mode=0o600)
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_database_backup_is_as_private_as_its_database(tmp_path):
    path = tmp_path / "campaign.db"
    conn = migrate_db.connect(path, kind="campaign")
    with migrate_db.transaction(conn):
        conn.execute("INSERT INTO profiles (profile_name, folder) VALUES ('s1', 'sessions/s1')")
    backup = migrate_db.backup_database(conn, path)
    conn.close()
    assert backup.name.startswith("campaign.db.bak-")
    assert stat.S_IMODE(backup.stat().st_mode) == stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT profile_name FROM profiles").fetchall() == [("s1",)]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_table_columns_align_without_trailing_spaces():
    text = migrate_db.format_table(("name", "count", "note"),
                                   [("alpha", 3, None), ("b", 12345, "long note")],
                                   right=(1,), missing="-")
    assert text.splitlines() == ["name   count  note",
                                 "alpha      3  -",
                                 "b      12345  long note"]
    assert migrate_db.format_table(("a", "b"), []) == "a  b"
    assert migrate_db.format_table(None, [("x", ""), ("yy", "z")]) == "x\nyy  z"
    assert migrate_db.format_table(None, []) == ""


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) for every command a parser runs, subcommands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))
            return
    yield path, parser


@pytest.mark.parametrize("script", ["campaign", "heatup", "telegram_session", "telegram_sim",
                                    "tgstat_fetcher", "vibedialer"])
def test_every_subcommand_names_its_function_in_its_parser(script):
    built = importlib.import_module(script).build_parser()
    parser = built[0] if isinstance(built, tuple) else built
    commands = dict(_commands(parser))
    assert len(commands) > 2
    unnamed = [" ".join(path) for path, sub in commands.items()
               if not callable(sub.get_default("handler"))]
    # the simulator's `init` makes the world the other commands open: run before them
    assert unnamed == (["init"] if script == "telegram_sim" else [])


def test_telethon_loads_without_aiohttp_which_stays_importable():
    probe = ("import sys, migrate_db\n"
             "migrate_db.lazy_import('telethon.errors').RPCError\n"
             "print('aiohttp' in sys.modules)\n"
             "import aiohttp.web, telethon.client.downloads as downloads\n"
             "print(downloads.aiohttp, aiohttp.web.__name__)\n")
    result = helpers.run([sys.executable, "-c", probe], cwd=helpers.ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "None", "aiohttp.web"]
