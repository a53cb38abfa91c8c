-- Every table and index of the suite, in one section per kind of database. A section starts
-- with a line
--     -- kind: NAME  recognised by: TABLE[.COLUMN], ...
-- and runs to the next such line. migrate_db.connect() gives a database only the sections of
-- its kind(s): the kind its caller names, else those recognised from its tables (a table, or
-- a table having that column, listed after "recognised by:"). CREATE ... IF NOT EXISTS
-- throughout; each section's indexes follow its tables.
--
-- Conventions: timestamps are UTC ISO-8601 text ("2026-11-21T12:34:56.123456+00:00" or the
-- shorter forms the spec documents show); durations are seconds.
-- A column added to an existing table must be nullable or carry a constant DEFAULT: older
-- databases get it through ALTER TABLE ADD COLUMN (see migrate_db.add_missing_columns).
-- Index statements run after every table of the database has its columns (legacy tables
-- included), whatever their place in the file.

-- ===== cloner (spec 002): the shared checkpoint ========================================
-- kind: checkpoint  recognised by: messages.source_chat, topic_map
-- One row per source message *for one target* (a pair of chats: the same source cloned
-- into two targets has two rows per message). status: pending | processing | done |
-- failed | skipped; `error` holds the reason (Telegram's error name where Telegram refused).
-- `session` is the account that owns the claim; `claimed_at` is refreshed by its heartbeat.
-- `random_id` is stored before the send and reused on a retry by the same account
-- (Telegram de-duplicates per account); a claim taken over by another account clears it.
-- `sent_at`: when the random_id was stored (the send started). A takeover of such a claim
-- sets `doubt_seen` (the old owner's last heartbeat): its send may have reached Telegram
-- between `sent_at` and shortly after that, so the new owner searches the target's
-- messages of that time before sending again.
-- Album members share `grouped_id` and are claimed, sent and completed together.
CREATE TABLE IF NOT EXISTS messages (
    source_chat   TEXT    NOT NULL,
    msg_id        INTEGER NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending',
    session       TEXT,
    claimed_at    TEXT,
    processed_at  TEXT,
    target_chat   TEXT    NOT NULL DEFAULT '',
    target_msg_id INTEGER,
    random_id     INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    grouped_id    INTEGER,
    sent_at       TEXT,
    doubt_seen    TEXT,
    PRIMARY KEY (source_chat, target_chat, msg_id)
);

-- Source topic -> target topic, one row per pair of chats; the row is inserted (claimed)
-- before the topic is created so two accounts never create the same topic twice.
CREATE TABLE IF NOT EXISTS topic_map (
    source_chat  TEXT    NOT NULL,
    source_topic INTEGER NOT NULL,
    target_chat  TEXT    NOT NULL,
    target_topic INTEGER,
    title        TEXT,
    session      TEXT,
    claimed_at   TEXT,
    created_at   TEXT,
    random_id    INTEGER,
    PRIMARY KEY (source_chat, source_topic, target_chat)
);

-- Ranges of source ids (lo .. hi) leased for reading the history: one account reads a
-- range (one history request) and claims the units (album or message) whose lowest id is
-- in it; status reading | read. A 'reading' lease is kept alive by its session's heartbeat
-- (`claimed_at`) and taken over once stale. `more` = 1: newer messages existed when it was
-- read, so the range is final; a range read with more = 0 (the newest one) is read again by
-- a later pass.
CREATE TABLE IF NOT EXISTS history_ranges (
    source_chat TEXT    NOT NULL,
    target_chat TEXT    NOT NULL,
    lo          INTEGER NOT NULL,
    hi          INTEGER NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'reading',
    session     TEXT,
    claimed_at  TEXT,
    read_at     TEXT,
    more        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source_chat, target_chat, lo)
);

-- "next pending message of this pair" is a range scan in id order
CREATE INDEX IF NOT EXISTS idx_messages_pair_status
    ON messages(source_chat, target_chat, status, msg_id);
CREATE INDEX IF NOT EXISTS idx_messages_processed_at ON messages(processed_at);
-- an account's claims (heartbeat)
CREATE INDEX IF NOT EXISTS idx_messages_session ON messages(session) WHERE status = 'processing';
-- an album's members, claimed and completed together
CREATE INDEX IF NOT EXISTS idx_messages_pair_album
    ON messages(source_chat, target_chat, grouped_id) WHERE grouped_id IS NOT NULL;

-- ===== Telegram accounts (spec 003): health and rate-limit registry ======================
-- kind: accounts  recognised by: rate_limits, accounts.last_check_ok
CREATE TABLE IF NOT EXISTS accounts (
    name          TEXT PRIMARY KEY,          -- the session folder's name, e.g. session1
    folder        TEXT,
    user_id       INTEGER,
    username      TEXT,
    phone         TEXT,
    authorized    INTEGER,
    last_check_at TEXT,
    last_check_ok INTEGER,
    last_error    TEXT,
    updated_at    TEXT
);

-- A wait Telegram imposed on an account (FloodWait over the threshold, PeerFlood, ...).
-- Every process of the account sleeps until `until`; `status` shows what is left.
CREATE TABLE IF NOT EXISTS rate_limits (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,             -- flood_wait | slow_mode | peer_flood
    request    TEXT,
    seconds    INTEGER NOT NULL,
    started_at TEXT    NOT NULL,
    until      TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_rate_limits_account ON rate_limits(account, until);

-- ===== campaign (spec 000) ==============================================================
-- kind: campaign  recognised by: tasks.chat_username, task_attempts, campaign_runs, campaign_texts
-- profile_id: the account's external id (the earlier system's browser-profile UUID, kept;
-- a UUID4 for accounts added by the suite). Earlier databases declare it UNIQUE NOT NULL.
CREATE TABLE IF NOT EXISTS profiles (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_id   TEXT,
    profile_name TEXT    NOT NULL UNIQUE,
    folder       TEXT,
    is_active    INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT
);

CREATE TABLE IF NOT EXISTS tasks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id            TEXT    NOT NULL DEFAULT 'default',
    chat_username       TEXT    NOT NULL,
    status              TEXT    NOT NULL DEFAULT 'pending', -- pending|in_progress|completed|blocked
    assigned_profile_id INTEGER,
    total_cycles        INTEGER NOT NULL DEFAULT 1,
    completed_cycles    INTEGER NOT NULL DEFAULT 0,          -- successful sends, all time
    success_count       INTEGER NOT NULL DEFAULT 0,
    failed_count        INTEGER NOT NULL DEFAULT 0,
    is_blocked          INTEGER NOT NULL DEFAULT 0,
    block_reason        TEXT,
    last_attempt_at     TEXT,
    next_available_at   TEXT,
    claimed_at          TEXT,
    created_at          TEXT,
    updated_at          TEXT,
    -- this chat's share of its latest run (campaign.py keeps these with the attempt rows):
    current_run_id      TEXT,                                -- the run the next three are for
    run_quota           INTEGER NOT NULL DEFAULT 0,          -- sends owed: carry + max_cycles
    run_carry           INTEGER NOT NULL DEFAULT 0,          -- of which left by the run before
    run_sent            INTEGER NOT NULL DEFAULT 0,          -- = this run's success attempts
    fail_streak         INTEGER NOT NULL DEFAULT 0,          -- chat errors since last success
    claimed_pid         INTEGER,                             -- worker process holding the claim
    open_attempt_id     INTEGER,                             -- a send whose outcome is unknown
    UNIQUE (group_id, chat_username)
);

CREATE TABLE IF NOT EXISTS task_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       INTEGER NOT NULL,
    profile_id    INTEGER,
    run_id        TEXT,                      -- NULL on rows from before per-run tracking
    cycle_number  INTEGER,
    status        TEXT    NOT NULL,          -- sending | success | failed
    error_type    TEXT,
    error_message TEXT,
    random_id     INTEGER,
    sent_msg_id   INTEGER,
    text_id       INTEGER,
    attempted_at  TEXT                       -- when the outcome came (while sending: the start)
);

CREATE TABLE IF NOT EXISTS campaign_runs (
    run_id      TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    status      TEXT NOT NULL DEFAULT 'running', -- running | stopped | interrupted | finished
    group_id    TEXT,
    config_json TEXT,
    pid            INTEGER,                      -- the `start` process supervising the workers
    stop_requested INTEGER NOT NULL DEFAULT 0,   -- set by `stop`; workers poll it
    quota_total    INTEGER,                      -- sends owed at start, carry-over included
    carry_total    INTEGER,                      -- of which left by the interrupted run before
    end_reason     TEXT
);

-- One row per account taking part in a run: its worker process and how it ended.
CREATE TABLE IF NOT EXISTS campaign_run_profiles (
    run_id     TEXT    NOT NULL,
    profile_id INTEGER NOT NULL,
    -- starting | running | done | stopped | failed | peer_flood | restricted | frozen
    status     TEXT    NOT NULL DEFAULT 'starting',
    reason     TEXT,
    pid        INTEGER,
    started_at TEXT,
    ended_at   TEXT,
    PRIMARY KEY (run_id, profile_id)
);

-- The texts a campaign sends (not `messages`: that name is the cloner's checkpoint; the
-- earlier campaign system's templates table `messages` is copied here and left as it was).
-- group_id: the chat group the text is for; NULL: every group.
CREATE TABLE IF NOT EXISTS campaign_texts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    text       TEXT    NOT NULL,
    group_id   TEXT,
    is_active  INTEGER NOT NULL DEFAULT 1,
    created_at TEXT
);

CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status, next_available_at);
CREATE UNIQUE INDEX IF NOT EXISTS idx_profiles_profile_id ON profiles(profile_id);
CREATE INDEX IF NOT EXISTS idx_attempts_run_id ON task_attempts(run_id);
CREATE INDEX IF NOT EXISTS idx_attempts_task_run ON task_attempts(task_id, run_id);
CREATE INDEX IF NOT EXISTS idx_attempts_profile_status_time
    ON task_attempts(profile_id, status, attempted_at);
-- the next chat a worker may claim: carry-over first, then this run's own cycles
CREATE INDEX IF NOT EXISTS idx_tasks_claim_carry ON tasks(current_run_id, next_available_at, id)
    WHERE status = 'pending' AND open_attempt_id IS NULL AND run_sent < run_carry;
CREATE INDEX IF NOT EXISTS idx_tasks_claim ON tasks(current_run_id, next_available_at, id)
    WHERE status = 'pending' AND open_attempt_id IS NULL AND run_sent < run_quota;

-- ===== heat-up (spec 001), exactly as the spec, plus an index ============================
-- kind: heatup  recognised by: session_history, heatup_jobs
CREATE TABLE IF NOT EXISTS session_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    action_type TEXT NOT NULL,
    action_data TEXT,
    timestamp DATETIME DEFAULT CURRENT_TIMESTAMP
);

-- One warmup: its plan and outcome. status: running | done | partial (some action failed)
-- | failed (no join or read succeeded, or the account was stopped). The actions it ran are
-- the session_history rows whose action_data has its job_id (with the step number), so a
-- job left running by a stopped process continues from its first unsaved step.
CREATE TABLE IF NOT EXISTS heatup_jobs (
    job_id       TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'running',
    planner      TEXT,
    planner_note TEXT,
    plan_json    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    finished_at  TEXT,
    error        TEXT
);

-- What `heatup.py pool check ACCOUNT` found for each pool channel ('@name', lower case):
-- status live | dead (detail: the channel's title, or why it is dead). Plans skip dead ones.
CREATE TABLE IF NOT EXISTS heatup_pool_checks (
    username   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    detail     TEXT,
    account    TEXT,
    checked_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_session_history_session_time
    ON session_history(session_id, timestamp);
CREATE INDEX IF NOT EXISTS idx_heatup_jobs_status ON heatup_jobs(status, session_id);

-- ===== dialer (spec 004) =================================================================
-- kind: dialer  recognised by: dial_results
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    start_time TEXT NOT NULL,
    end_time TEXT,
    backend_type TEXT,
    storage_type TEXT,
    phone_pattern TEXT,
    total_calls INTEGER DEFAULT 0,
    successful_calls INTEGER DEFAULT 0,
    modem_detections INTEGER DEFAULT 0,
    country_code TEXT,
    randomized BOOLEAN,
    random_seed TEXT,       -- the seed of a --random session's order, so a resume keeps it
    scope TEXT              -- the authorisation (--scope) as JSON, with the file's SHA-256
);

CREATE TABLE IF NOT EXISTS dial_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    status TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    success BOOLEAN NOT NULL,
    message TEXT,
    carrier_detected BOOLEAN,
    tone_type TEXT,
    tone_confidence REAL    -- 0..1, how sure the classifier was of tone_type
);

CREATE INDEX IF NOT EXISTS idx_session_id ON dial_results(session_id);
CREATE INDEX IF NOT EXISTS idx_dial_results_session_phone ON dial_results(session_id, phone_number);
