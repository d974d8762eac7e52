-- The message pipeline: conversations (flow state per contact), every message in and
-- out (outbound ones are the durable outbox), their status history, durable flow timers,
-- and what the sandbox provider has been sent. Scheduling times are Unix milliseconds.

CREATE TABLE conversations (
    bot_id           UUID NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact          TEXT NOT NULL,
    contact_name     TEXT,
    state            JSONB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('idle', 'active', 'handoff', 'waiting_http')),
    flow             TEXT,
    step             TEXT,
    flow_version     BIGINT,
    last_message_at  TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (bot_id, contact)
);

CREATE TABLE messages (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   UUID NOT NULL UNIQUE,
    bot_id               UUID NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    tenant_id            UUID NOT NULL,
    contact              TEXT NOT NULL,
    direction            TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    body                 JSONB NOT NULL,
    state                TEXT NOT NULL,
    provider             TEXT,
    provider_message_id  TEXT,
    attempts             BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms      BIGINT,
    last_error           TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    sent_at              TIMESTAMPTZ
);

-- A provider delivering the same message twice stores it once.
CREATE UNIQUE INDEX messages_inbound_dedupe ON messages (bot_id, provider, provider_message_id)
    WHERE direction = 'in' AND provider_message_id IS NOT NULL;
CREATE INDEX messages_contact ON messages (bot_id, contact, seq);
CREATE INDEX messages_due ON messages (next_attempt_ms) WHERE state IN ('pending', 'failed');
CREATE INDEX messages_state ON messages (state, seq);

CREATE TABLE message_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  UUID NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    detail      TEXT,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX message_events_message ON message_events (message_id, seq);

CREATE TABLE flow_timers (
    bot_id    UUID NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact   TEXT NOT NULL,
    timer_id  BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    due_ms    BIGINT NOT NULL,
    PRIMARY KEY (bot_id, contact, timer_id)
);
CREATE INDEX flow_timers_due ON flow_timers (due_ms);

CREATE TABLE sandbox_messages (
    idempotency_key      TEXT PRIMARY KEY,
    bot_id               UUID NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact              TEXT NOT NULL,
    body                 JSONB NOT NULL,
    provider_message_id  TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL
);
