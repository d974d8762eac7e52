-- Idempotency keys of REST API sends: the first request with a key, per tenant, writes
-- its message and this row in one transaction; a repeat finds the row and answers with
-- the same message, and a different request under the same key is refused. The
-- fingerprint is a SHA-256 of the bot and the request as validated.

CREATE TABLE idempotency_keys (
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    message_id   UUID NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
