-- People and programs that use the REST API. A user belongs to one tenant, or to none
-- when a platform admin. Each login is a session (its id is the access token's `jti`):
-- logout or a disabled user ends it, and a refresh token used twice revokes it. Refresh
-- tokens and API keys are kept only as SHA-256 hashes. A tenant may have its own API
-- request rate.

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'owner', 'agent', 'viewer')),
    status         TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    last_login_at  TEXT,
    CONSTRAINT users_email_key UNIQUE (email),
    CHECK ((role = 'admin') = (tenant_id IS NULL))
) STRICT;
CREATE INDEX users_tenant ON users (tenant_id, email);

CREATE TABLE auth_sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revoked_why   TEXT
) STRICT;
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    session_id   TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    used_at      TEXT
) STRICT;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    scopes        TEXT NOT NULL CHECK (json_valid(scopes)),
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix)
) STRICT;
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

ALTER TABLE tenants ADD COLUMN api_rate_per_minute INTEGER;
