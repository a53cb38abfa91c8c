-- The shared clone checkpoint in PostgreSQL (SHARED_DB_URL=postgresql://...): the same
-- tables, columns and keys as `messages` and `topic_map` in schema.sql, in PostgreSQL's
-- types. Times are timestamptz set by the server's clock (now()), so the accounts of two
-- VPSes judge leases by one clock. Applied by migrate_db.py (pg_connect / pg_upgrade); the
-- numbered changes after this file's first version are migrate_db.PG_MIGRATIONS, each
-- recorded in schema_migrations. Statements end with ';' at the end of a line.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per source message per target (status: pending | processing | done | failed |
-- skipped), in schema.sql's column order so `SELECT *` reads the same in psql and sqlite3.
CREATE TABLE IF NOT EXISTS messages (
    source_chat   text        NOT NULL,
    msg_id        bigint      NOT NULL,
    status        text        NOT NULL DEFAULT 'pending',
    session       text,
    claimed_at    timestamptz,
    processed_at  timestamptz,
    target_chat   text        NOT NULL DEFAULT '',
    target_msg_id bigint,
    random_id     bigint,
    attempts      integer     NOT NULL DEFAULT 0,
    error         text,
    grouped_id    bigint,
    sent_at       timestamptz,
    doubt_seen    timestamptz,
    PRIMARY KEY (source_chat, target_chat, msg_id)
);

-- Source topic -> target topic per pair; the row is claimed before the topic is created.
CREATE TABLE IF NOT EXISTS topic_map (
    source_chat  text        NOT NULL,
    source_topic bigint      NOT NULL,
    target_chat  text        NOT NULL,
    target_topic bigint,
    title        text,
    session      text,
    claimed_at   timestamptz,
    created_at   timestamptz,
    random_id    bigint,
    PRIMARY KEY (source_chat, source_topic, target_chat)
);

-- Ranges of source ids leased for reading the history (schema.sql explains).
CREATE TABLE IF NOT EXISTS history_ranges (
    source_chat text        NOT NULL,
    target_chat text        NOT NULL,
    lo          bigint      NOT NULL,
    hi          bigint      NOT NULL,
    status      text        NOT NULL DEFAULT 'reading',
    session     text,
    claimed_at  timestamptz,
    read_at     timestamptz,
    more        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (source_chat, target_chat, lo)
);

CREATE INDEX IF NOT EXISTS idx_messages_pair_status
    ON messages (source_chat, target_chat, status, msg_id);
CREATE INDEX IF NOT EXISTS idx_messages_processed_at ON messages (processed_at);
CREATE INDEX IF NOT EXISTS idx_messages_session ON messages (session)
    WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS idx_messages_pair_album
    ON messages (source_chat, target_chat, grouped_id)
    WHERE grouped_id IS NOT NULL;
