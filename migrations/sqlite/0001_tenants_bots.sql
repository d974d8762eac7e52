-- Tenants and their bots. Ids are UUIDs as text; timestamps are UTC, RFC 3339 text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
) STRICT;

CREATE TABLE bots (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    phone       TEXT,
    timezone    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'paused')),
    settings    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT bots_tenant_name_key UNIQUE (tenant_id, name)
) STRICT;

-- One number, one bot: inbound messages must route to exactly one place.
CREATE UNIQUE INDEX bots_phone_key ON bots (phone) WHERE phone IS NOT NULL;
