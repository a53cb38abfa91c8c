#!/usr/bin/env python3
"""Many accounts clone into the same target through one shared checkpoint, no message twice.

Each account runs this from its own folder (run.sh inside screen); all of them share
SHARED_DB_PATH (default ../shared/checkpoint.db). Every message is claimed atomically
(BEGIN IMMEDIATE); a claim whose account stopped heart-beating is taken over after
CLAIM_TIMEOUT; albums are claimed whole; each topic is created once; a FloodWait pauses only
the account that got it. ORDERED=true makes the accounts send in source order. Everything
else is clone_streaming.py's.

    cd sessions/session1 && python ../../clone_streaming_shared.py [--once] [--status]
"""
from __future__ import annotations

import clone_streaming
import migrate_db

DEFAULT_SHARED_DB = "../shared/checkpoint.db"

SHARED = clone_streaming.Profile(
    "clone_streaming_shared.py",
    "Several accounts (one process each, from their own folders) copy SOURCE_CHAT into "
    "TARGET_CHAT through one shared checkpoint: each message exactly once.",
    "SHARED_DB_PATH", DEFAULT_SHARED_DB, shared=True)


def main(argv: list[str] | None = None) -> int:
    """Run clone_streaming with the shared checkpoint's settings."""
    return clone_streaming.main(argv, SHARED)


if __name__ == "__main__":
    migrate_db.run_main(main)
