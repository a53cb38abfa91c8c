"""campaign.py's inputs: config.yaml validation, chat lists, message files, profiles and the
command line. Every mistake is one line naming what is wrong, exit 2 (1 for a start with
nothing to do), and nothing half imported."""
from __future__ import annotations

import random
from pathlib import Path

import helpers
import pytest
from helpers import python

import campaign
import migrate_db
import telegram_sim

SCRIPT = Path(__file__).resolve().parent.parent / "campaign.py"


def run(tmp_path: Path, capsys, *args: str, config: str | None = None) -> tuple[int, str, str]:
    """campaign.main in this process with a database (and config, if given) under tmp_path."""
    argv = ["--db", str(tmp_path / "campaign.db")]
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_text(config, encoding="utf-8")
        argv += ["--config", str(path)]
    capsys.readouterr()
    code = campaign.main([*argv, *args])
    out, err = capsys.readouterr()
    return code, out, err


def tasks(tmp_path: Path) -> list[tuple[str, str]]:
    conn = migrate_db.connect(tmp_path / "campaign.db", kind="campaign")
    try:
        return conn.execute("SELECT group_id, chat_username FROM tasks ORDER BY id").fetchall()
    finally:
        conn.close()


# ----------------------------------------------------------------------------- config.yaml

@pytest.mark.parametrize(("text", "message"), [
    ("limits:\n  max_cycle: 2\n", "unknown key limits.max_cycle (known in limits: "),
    ("limit:\n  max_cycles: 2\n", "unknown key 'limit' (known: limits, retry, messages, "),
    ("limits:\n  max_messages_per_hour: -5\n",
     "limits.max_messages_per_hour must be >= 1, got -5 (negative)"),
    ("limits:\n  cycle_delay_minutes: -1\n", "limits.cycle_delay_minutes must be >= 0, got -1"),
    ("limits:\n  max_cycles: two\n", "limits.max_cycles must be a whole number, got 'two'"),
    ("limits:\n  max_cycles: true\n", "limits.max_cycles must be a whole number, got True"),
    ("limits:\n  max_cycles: 1.5\n", "limits.max_cycles must be a whole number, got 1.5"),
    ("limits:\n  delay_randomness: 2\n", "limits.delay_randomness must be <= 1, got 2"),
    ("retry:\n  max_attempts_before_block: 0\n",
     "retry.max_attempts_before_block must be >= 1, got 0"),
    ("messages:\n  order: shuffle\n", "messages.order must be one of rotation, random"),
    ("limits: 5\n", "limits must be a mapping of keys, got 5"),
    ("- a\n- b\n", "the file must be a mapping of sections"),
    ("limits:\n  max_cycles: [1\n", "not valid YAML at line"),
    # not finite, or absurd: refused before a worker could crash on them after a send
    ("limits:\n  cycle_delay_minutes: .inf\n",
     "limits.cycle_delay_minutes must be a finite number, got inf"),
    ("limits:\n  delay_randomness: .nan\n",
     "limits.delay_randomness must be a finite number, got nan"),
    ("retry:\n  retry_delay_minutes: -.inf\n",
     "retry.retry_delay_minutes must be a finite number, got -inf"),
    ("retry:\n  network_backoff_max_seconds: 1.0e+300\n",
     "retry.network_backoff_max_seconds must be <= 86400, got 1e+300"),
    ("limits:\n  max_messages_per_hour: .inf\n",
     "limits.max_messages_per_hour must be a whole number, got inf"),
    ("limits:\n  max_cycles: 100000000000000000000\n",
     "limits.max_cycles must be <= 1000, got 100000000000000000000"),
    ("limits:\n  cycle_delay_minutes: 100000\n",
     "limits.cycle_delay_minutes must be <= 10080, got 100000"),
    ("messages:\n  parse_mode: markdownv2\n",
     "messages.parse_mode must be one of markdown, html, none, got 'markdownv2'"),
])
def test_config_errors_name_the_key(tmp_path: Path, capsys, text: str, message: str) -> None:
    code, out, err = run(tmp_path, capsys, "plan", config=text)
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'config.yaml'}: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "campaign.db").exists()  # nothing done on a bad config


def test_config_defaults_and_example(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(campaign, "DEFAULT_CONFIG", tmp_path / "config.yaml")
    assert campaign.load_config(None) == campaign.Config()  # no config.yaml: the defaults
    example = campaign.load_config(campaign.EXAMPLE_CONFIG)
    assert (example.max_messages_per_hour, example.max_cycles,
            example.cycle_delay_minutes, example.delay_randomness) == (30, 2, 20.0, 0.2)
    assert example.max_attempts_before_block == 3 and example.text_order == "rotation"
    assert example.parse_mode == "markdown" == campaign.Config().parse_mode
    assert example.database_path == campaign.SUITE_DIR / "sessions/shared/campaign.db"
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n", encoding="utf-8")
    assert campaign.load_config(empty).max_cycles == campaign.Config().max_cycles


def test_missing_config_named_on_the_command_line(tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    code = campaign.main(["--config", str(tmp_path / "nope.yaml"), "status"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.yaml: no such config file" in err


def test_database_path_from_config_relative_to_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "config.yaml").write_text("database:\n  path: data/c.db\n", encoding="utf-8")
    capsys.readouterr()
    assert campaign.main(["--config", str(tmp_path / "config.yaml"), "init"]) == 0
    assert (tmp_path / "data" / "c.db").is_file()
    assert campaign.main(["--config", str(tmp_path / "config.yaml"), "--db",
                          str(tmp_path / "other.db"), "runs"]) == 0
    assert (tmp_path / "other.db").is_file()
    assert "no runs yet" in capsys.readouterr().out


def test_cycle_delay_randomness_only_lengthens() -> None:
    config = campaign.Config(cycle_delay_minutes=10, delay_randomness=0.5)
    rng = random.Random(1)
    delays = [campaign.cycle_delay_seconds(config, rng) for _ in range(200)]
    assert min(delays) >= 600 and max(delays) <= 900 and max(delays) - min(delays) > 200


# ----------------------------------------------------------------------------- chat lists

def test_import_chats_txt_normalises_and_reports_duplicates(tmp_path: Path, capsys) -> None:
    chats = tmp_path / "chats.txt"
    chats.write_text("# my chats\n@Alpha_Chat\nhttps://t.me/beta_chat\n\nt.me/s/gamma_chat/\n"
                     "-1001234567890\nalpha_chat\n", encoding="utf-8")
    code, out, _ = run(tmp_path, capsys, "import-chats", str(chats), "--group", "g1")
    assert code == 0
    assert f"duplicate skipped: {chats}:7: @alpha_chat repeats line 2" in out
    assert "4 chats added to group 'g1', 0 already there, 1 duplicate line(s) skipped" in out
    assert tasks(tmp_path) == [("g1", "@alpha_chat"), ("g1", "@beta_chat"),
                               ("g1", "@gamma_chat"), ("g1", "-1001234567890")]
    code, out, _ = run(tmp_path, capsys, "import-chats", str(chats), "--group", "g1")
    assert "0 chats added to group 'g1', 4 already there" in out


def test_import_chats_malformed_lines_import_nothing(tmp_path: Path, capsys) -> None:
    chats = tmp_path / "chats.txt"
    chats.write_text("@good_chat\n@no\nhttps://t.me/+AbCdEf\nhello world!\n@fine_chat\n",
                     encoding="utf-8")
    code, out, err = run(tmp_path, capsys, "import-chats", str(chats))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{chats}:2: '@no': a username has 4-32 letters")
    assert lines[1].startswith(f"{chats}:3: 'https://t.me/+AbCdEf': invite links cannot")
    assert lines[2].startswith(f"{chats}:4: 'hello world!':")
    assert lines[3] == (f"error: {chats}: 3 malformed line(s), nothing imported; fix them "
                        "and import again")
    assert tasks(tmp_path) == []


def test_import_chats_csv_with_header(tmp_path: Path, capsys) -> None:
    chats = tmp_path / "chats.csv"
    chats.write_text("title,username\nFirst,@first_chat\nSecond,second_chat\n", encoding="utf-8")
    code, out, _ = run(tmp_path, capsys, "import-chats", str(chats))
    assert code == 0
    assert tasks(tmp_path) == [("default", "@first_chat"), ("default", "@second_chat")]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"), ("", "no chats in the file"), (b"\xff\xfe\x00bad", "not UTF-8")])
def test_import_chats_unusable_files(tmp_path: Path, capsys, content, message) -> None:
    chats = tmp_path / "chats.txt"
    if isinstance(content, bytes):
        chats.write_bytes(content)
    elif content is not None:
        chats.write_text(content, encoding="utf-8")
    code, _, err = run(tmp_path, capsys, "import-chats", str(chats))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- texts

def test_import_messages_json_and_txt(tmp_path: Path, capsys) -> None:
    as_json = tmp_path / "texts.json"
    as_json.write_text('{"messages": ["One", {"text": "Two"}, "One"]}', encoding="utf-8")
    code, out, _ = run(tmp_path, capsys, "import-messages", str(as_json))
    assert code == 0 and "2 text(s) added for every group, 1 already there; 2 active" in out
    as_txt = tmp_path / "texts.txt"
    as_txt.write_text("Three\nlines\n---\nFour\n", encoding="utf-8")
    code, out, _ = run(tmp_path, capsys, "import-messages", str(as_txt), "--replace")
    assert code == 0 and "2 text(s) added for every group, 0 already there; 2 active" in out
    conn = migrate_db.connect(tmp_path / "campaign.db", kind="campaign")
    assert [t for _, t in campaign.active_texts(conn)] == ["Three\nlines", "Four"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("t.json", '["ok", ""]', "message 2 is empty"),
    ("t.json", '["ok", 5]', "message 2 is not a text"),
    ("t.json", '["ok",\n oops]', "not valid JSON at line 2"),
    ("t.txt", "x" * 5000, "message 1 has 5000 characters; Telegram allows 4096"),
    ("t.txt", "ok\n---\n\n", "message 2 is empty"),
])
def test_import_messages_errors(tmp_path: Path, capsys, name: str, content: str,
                                message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    code, _, err = run(tmp_path, capsys, "import-messages", str(path))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "campaign.db").exists()


# ----------------------------------------------------------------------------- profiles, start

def test_profiles_and_start_preconditions(tmp_path: Path, capsys) -> None:
    code, _, err = run(tmp_path, capsys, "add-profile", str(tmp_path / "nowhere"))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run(tmp_path, capsys, "start")
    assert code == 1 and "no chats to message in any group; import them" in err
    chats = tmp_path / "chats.txt"
    chats.write_text("@some_chat\n", encoding="utf-8")
    run(tmp_path, capsys, "import-chats", str(chats))
    code, _, err = run(tmp_path, capsys, "start", "--group", "other")
    assert code == 1 and "no chats to message in group 'other'" in err
    code, _, err = run(tmp_path, capsys, "start")
    assert code == 1 and "no texts to send to group(s) 'default'" in err
    texts = tmp_path / "t.txt"
    texts.write_text("Hi\n", encoding="utf-8")
    run(tmp_path, capsys, "import-messages", str(texts))
    code, _, err = run(tmp_path, capsys, "start")
    assert code == 1 and "no profiles; add an account folder with add-profile" in err
    world = telegram_sim.World.create(tmp_path / "world.db")
    world.add_account("acc1")
    folder = world.make_session_folder(tmp_path / "sessions" / "acc1", "acc1")
    code, out, _ = run(tmp_path, capsys, "add-profile", str(folder))
    assert code == 0 and "profile acc1 added" in out
    code, out, _ = run(tmp_path, capsys, "add-profile", str(folder))
    assert code == 0 and "profile acc1 updated" in out
    code, out, _ = run(tmp_path, capsys, "list-profiles")
    assert out.startswith("acc1  ") and "0/30 in the last hour" in out
    code, _, err = run(tmp_path, capsys, "start", "--profiles", "acc9", "--dry-run")
    assert code == 2 and "unknown profile(s): acc9" in err


def test_usage_errors_exit_2_without_traceback(tmp_path: Path, capsys) -> None:
    for args in (["stop", "--wait", "-1"], ["stop", "--wait", "nan"], ["stop", "--wait", "inf"],
                 ["start", "--workers", "0"], ["start", "--workers", "two"],
                 ["import-chats"], ["frobnicate"], ["unblock"], ["clear-wait"]):
        with pytest.raises(SystemExit) as exited:
            campaign.main(["--db", str(tmp_path / "c.db"), *args])
        assert exited.value.code == 2, args
        assert "error:" in capsys.readouterr().err
    result = helpers.run(python(SCRIPT))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    helped = helpers.run(python(SCRIPT, "--help"))
    assert helped.returncode == 0 and "import-chats" in helped.stdout
    assert "worker" not in helped.stdout.split("options:")[0].split("COMMAND")[-1]
