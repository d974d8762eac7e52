-- Tenants and their bots. Ids are UUIDs; timestamps are TIMESTAMPTZ (UTC).

CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE bots (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    phone       TEXT,
    timezone    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'paused')),
    settings    JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT bots_tenant_name_key UNIQUE (tenant_id, name)
);

-- One number, one bot: inbound messages must route to exactly one place.
CREATE UNIQUE INDEX bots_phone_key ON bots (phone) WHERE phone IS NOT NULL;
CREATE INDEX bots_tenant_id_idx ON bots (tenant_id);
