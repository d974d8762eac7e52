-- People and programs that use the REST API. A user belongs to one tenant, or to none
-- when a platform admin. Each login is a session (its id is the access token's `jti`):
-- logout or a disabled user ends it, and a refresh token used twice revokes it. Refresh
-- tokens and API keys are kept only as SHA-256 hashes. A tenant may have its own API
-- request rate.

CREATE TABLE users (
    id             UUID PRIMARY KEY NOT NULL,
    tenant_id      UUID REFERENCES tenants (id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'owner', 'agent', 'viewer')),
    status         TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    password_hash  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    last_login_at  TIMESTAMPTZ,
    CONSTRAINT users_email_key UNIQUE (email),
    CHECK ((role = 'admin') = (tenant_id IS NULL))
);
CREATE INDEX users_tenant ON users (tenant_id, email);

CREATE TABLE auth_sessions (
    id            UUID PRIMARY KEY NOT NULL,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    revoked_why   TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    session_id   UUID NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id            UUID PRIMARY KEY NOT NULL,
    tenant_id     UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    scopes        JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix)
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

ALTER TABLE tenants ADD COLUMN api_rate_per_minute INTEGER;
