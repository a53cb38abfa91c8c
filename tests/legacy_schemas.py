"""Tables as the earlier systems left them (NOTES.md), for migration tests to build on."""

LEGACY_CAMPAIGN_TABLES = """
    CREATE TABLE profiles (id INTEGER PRIMARY KEY AUTOINCREMENT, profile_name TEXT UNIQUE,
                           is_active INTEGER DEFAULT 1);
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT, chat_username TEXT,
        status TEXT DEFAULT 'pending', assigned_profile_id INTEGER,
        total_cycles INTEGER DEFAULT 1, completed_cycles INTEGER DEFAULT 0,
        success_count INTEGER DEFAULT 0, failed_count INTEGER DEFAULT 0,
        is_blocked INTEGER DEFAULT 0, block_reason TEXT, last_attempt_at TEXT,
        next_available_at TEXT, UNIQUE(group_id, chat_username));
    CREATE TABLE task_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER, profile_id INTEGER,
        cycle_number INTEGER, status TEXT, error_type TEXT,
        attempted_at TEXT DEFAULT CURRENT_TIMESTAMP);
"""
