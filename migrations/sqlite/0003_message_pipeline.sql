-- The message pipeline: conversations (flow state per contact), every message in and
-- out (outbound ones are the durable outbox), their status history, durable flow timers,
-- and what the sandbox provider has been sent. Scheduling times are Unix milliseconds.

CREATE TABLE conversations (
    bot_id           TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact          TEXT NOT NULL,
    contact_name     TEXT,
    state            TEXT NOT NULL CHECK (json_valid(state)),
    status           TEXT NOT NULL CHECK (status IN ('idle', 'active', 'handoff', 'waiting_http')),
    flow             TEXT,
    step             TEXT,
    flow_version     INTEGER,
    last_message_at  TEXT,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (bot_id, contact)
) STRICT;

CREATE TABLE messages (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    bot_id               TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    tenant_id            TEXT NOT NULL,
    contact              TEXT NOT NULL,
    direction            TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    body                 TEXT NOT NULL CHECK (json_valid(body)),
    state                TEXT NOT NULL,
    provider             TEXT,
    provider_message_id  TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms      INTEGER,
    last_error           TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    sent_at              TEXT
) STRICT;

-- A provider delivering the same message twice stores it once.
CREATE UNIQUE INDEX messages_inbound_dedupe ON messages (bot_id, provider, provider_message_id)
    WHERE direction = 'in' AND provider_message_id IS NOT NULL;
CREATE INDEX messages_contact ON messages (bot_id, contact, seq);
CREATE INDEX messages_due ON messages (next_attempt_ms) WHERE state IN ('pending', 'failed');
CREATE INDEX messages_state ON messages (state, seq);

CREATE TABLE message_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    detail      TEXT,
    at          TEXT NOT NULL
) STRICT;
CREATE INDEX message_events_message ON message_events (message_id, seq);

CREATE TABLE flow_timers (
    bot_id    TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact   TEXT NOT NULL,
    timer_id  INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    due_ms    INTEGER NOT NULL,
    PRIMARY KEY (bot_id, contact, timer_id)
) STRICT;
CREATE INDEX flow_timers_due ON flow_timers (due_ms);

CREATE TABLE sandbox_messages (
    idempotency_key      TEXT PRIMARY KEY NOT NULL,
    bot_id               TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact              TEXT NOT NULL,
    body                 TEXT NOT NULL CHECK (json_valid(body)),
    provider_message_id  TEXT NOT NULL,
    created_at           TEXT NOT NULL
) STRICT;
