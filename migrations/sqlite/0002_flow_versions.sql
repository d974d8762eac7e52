-- Versions of each bot's flow document. Every import is a new version; the bot names
-- the active one, on which new conversations start.

CREATE TABLE flow_versions (
    id          TEXT PRIMARY KEY NOT NULL,
    bot_id      TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version > 0),
    format      TEXT NOT NULL CHECK (format IN ('toml', 'json')),
    source      TEXT NOT NULL,
    document    TEXT NOT NULL CHECK (json_valid(document)),
    created_at  TEXT NOT NULL,
    CONSTRAINT flow_versions_bot_version_key UNIQUE (bot_id, version)
) STRICT;

ALTER TABLE bots ADD COLUMN active_flow_version INTEGER;
-- Version numbers are never reused, even after deletions: conversation state refers to
-- them, and a conversation must never continue on a different document.
ALTER TABLE bots ADD COLUMN last_flow_version INTEGER NOT NULL DEFAULT 0;
