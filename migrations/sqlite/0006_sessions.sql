-- Paired WhatsApp Web sessions (bridges, Evolution): the latest known state of each
-- bot's session per provider, with its QR code while pairing and the paired phone, and
-- the history of its state changes with their reasons.

CREATE TABLE bot_sessions (
    bot_id      TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    session     TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    phone       TEXT,
    qr          TEXT,
    qr_at       TEXT,
    since       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (bot_id, provider)
) STRICT;

CREATE TABLE session_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id    TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    provider  TEXT NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT,
    at        TEXT NOT NULL
) STRICT;
CREATE INDEX session_events_bot ON session_events (bot_id, provider, seq);
