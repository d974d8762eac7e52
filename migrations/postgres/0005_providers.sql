-- Real providers. Each bot's chain entry has its own settings and encrypted secrets
-- (bot_providers; `route_key` is what routes a shared webhook to the bot: the Cloud API
-- phone number id, the Evolution instance, the bridge session). `secret_check` holds a
-- value sealed under the master key, so a wrong key is caught at start-up. Contacts
-- carry every identifier a customer is known by, so one person is one conversation.
-- Every send attempt is recorded; status webhooks find outbound messages by the
-- provider's id through an index.

CREATE TABLE bot_providers (
    bot_id      UUID NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    settings    JSONB NOT NULL DEFAULT '{}'::jsonb,
    secrets     TEXT,
    route_key   TEXT,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (bot_id, provider)
);
CREATE UNIQUE INDEX bot_providers_route ON bot_providers (provider, route_key)
    WHERE route_key IS NOT NULL;

CREATE TABLE secret_check (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    sealed      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE contacts (
    bot_id        UUID NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    contact       TEXT NOT NULL,
    phone         TEXT,
    bsuid         TEXT,
    parent_bsuid  TEXT,
    lid           TEXT,
    username      TEXT,
    name          TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (bot_id, contact)
);
CREATE UNIQUE INDEX contacts_phone ON contacts (bot_id, phone) WHERE phone IS NOT NULL;
CREATE UNIQUE INDEX contacts_bsuid ON contacts (bot_id, bsuid) WHERE bsuid IS NOT NULL;
CREATE UNIQUE INDEX contacts_lid ON contacts (bot_id, lid) WHERE lid IS NOT NULL;

CREATE TABLE send_attempts (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   UUID NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('sent', 'retryable', 'permanent', 'provider_broken', 'skipped')),
    error_code   TEXT,
    error        TEXT,
    latency_ms   BIGINT NOT NULL,
    at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX send_attempts_message ON send_attempts (message_id, seq);

CREATE INDEX messages_outbound_provider_id ON messages (provider, provider_message_id)
    WHERE direction = 'out' AND provider_message_id IS NOT NULL;
