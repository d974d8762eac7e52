-- Work is owned in the database. Outbox entries being sent carry the dashd that claimed
-- them and a lease (Unix ms); expired leases are reclaimed periodically. Conversations
-- carry a version checked on every write. Inbound messages reuse attempts,
-- next_attempt_ms and last_error for retries of a failing step (then `failed`). Timers
-- count failed attempts. The sandbox counts send calls, duplicates included.

ALTER TABLE messages ADD COLUMN lease_owner TEXT;
ALTER TABLE messages ADD COLUMN lease_until_ms BIGINT;
CREATE INDEX messages_leases ON messages (lease_until_ms) WHERE state = 'processing';

ALTER TABLE conversations ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

ALTER TABLE flow_timers ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;

ALTER TABLE sandbox_messages ADD COLUMN calls BIGINT NOT NULL DEFAULT 1;
