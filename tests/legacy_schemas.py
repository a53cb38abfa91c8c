"""Tables as the earlier systems left them (NOTES.md, "Earlier systems' databases"), for
migration tests to build on.

The earlier campaign system's schema "v2.0" (before run_id): every time is SQLite
CURRENT_TIMESTAMP text `YYYY-MM-DD HH:MM:SS` (UTC); profiles carry an external profile_id
(a browser-profile UUID) that task_attempts, send_log and profile_daily_stats name accounts
by; `messages` holds the message templates of each group.
"""

LEGACY_CAMPAIGN_TABLES = """
    PRAGMA foreign_keys = ON;
    CREATE TABLE profiles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        profile_id TEXT UNIQUE NOT NULL,
        profile_name TEXT NOT NULL,
        is_active BOOLEAN DEFAULT 1,
        is_blocked BOOLEAN DEFAULT 0,
        messages_sent_current_hour INTEGER DEFAULT 0,
        hour_reset_time TIMESTAMP,
        last_message_time TIMESTAMP,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id TEXT NOT NULL,
        chat_username TEXT NOT NULL,
        status TEXT DEFAULT 'pending',
        assigned_profile_id TEXT,
        total_cycles INTEGER DEFAULT 1,
        completed_cycles INTEGER DEFAULT 0,
        success_count INTEGER DEFAULT 0,
        failed_count INTEGER DEFAULT 0,
        is_blocked BOOLEAN DEFAULT 0,
        block_reason TEXT,
        last_attempt_at TIMESTAMP,
        next_available_at TIMESTAMP,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        UNIQUE (group_id, chat_username));
    CREATE INDEX idx_tasks_group_id ON tasks(group_id);
    CREATE INDEX idx_tasks_status ON tasks(status);
    CREATE INDEX idx_tasks_next_available ON tasks(next_available_at);
    CREATE INDEX idx_tasks_is_blocked ON tasks(is_blocked);
    CREATE INDEX idx_tasks_group_status ON tasks(group_id, status);
    CREATE TABLE task_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL,
        profile_id TEXT NOT NULL,
        cycle_number INTEGER NOT NULL,
        status TEXT NOT NULL,
        message_text TEXT,
        error_type TEXT,
        error_message TEXT,
        timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE);
    CREATE INDEX idx_attempts_task_id ON task_attempts(task_id);
    CREATE INDEX idx_attempts_status ON task_attempts(status);
    CREATE INDEX idx_attempts_timestamp ON task_attempts(timestamp);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id TEXT NOT NULL,
        text TEXT NOT NULL,
        is_active BOOLEAN DEFAULT 1,
        usage_count INTEGER DEFAULT 0,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
    CREATE INDEX idx_messages_group_id ON messages(group_id);
    CREATE INDEX idx_messages_group_active ON messages(group_id, is_active);
    CREATE TABLE send_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER,
        group_id TEXT NOT NULL,
        profile_id TEXT NOT NULL,
        chat_username TEXT NOT NULL,
        message_text TEXT,
        status TEXT NOT NULL,
        error_type TEXT,
        error_details TEXT,
        timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE SET NULL);
    CREATE INDEX idx_send_log_profile_time ON send_log(profile_id, timestamp);
    CREATE TABLE profile_daily_stats (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        profile_id TEXT NOT NULL,
        date DATE NOT NULL,
        messages_sent INTEGER DEFAULT 0,
        successful_sends INTEGER DEFAULT 0,
        failed_sends INTEGER DEFAULT 0,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        UNIQUE (profile_id, date));
    CREATE TABLE screenshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        log_id INTEGER,
        screenshot_type TEXT NOT NULL,
        file_name TEXT NOT NULL,
        description TEXT,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (log_id) REFERENCES send_log(id) ON DELETE CASCADE);
    CREATE VIEW profile_stats AS
        SELECT p.profile_id, p.profile_name, p.is_active, p.is_blocked,
               COUNT(DISTINCT ta.task_id) AS tasks_processed,
               SUM(CASE WHEN ta.status = 'success' THEN 1 ELSE 0 END) AS successful_sends,
               SUM(CASE WHEN ta.status = 'failed' THEN 1 ELSE 0 END) AS failed_sends,
               p.last_message_time
        FROM profiles p LEFT JOIN task_attempts ta ON ta.profile_id = p.profile_id
        GROUP BY p.profile_id, p.profile_name, p.is_active, p.is_blocked, p.last_message_time;
    CREATE VIEW task_progress AS
        SELECT t.group_id, t.chat_username, t.status, t.completed_cycles, t.total_cycles,
               ROUND(CAST(t.completed_cycles AS FLOAT) / CAST(t.total_cycles AS FLOAT) * 100, 2)
                   AS progress_percent,
               t.success_count, t.failed_count, t.last_attempt_at, t.assigned_profile_id
        FROM tasks t;
"""
