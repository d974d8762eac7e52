-- A tenant's business data: catalogue, sellers, customers (one per tenant and contact),
-- orders with their items (prices as sold, in minor units), and the event log the REST
-- API streams to dashboards (a bounded number of events per tenant, resumable by id).

CREATE TABLE products (
    id           UUID PRIMARY KEY NOT NULL,
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sku          TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    price_cents  BIGINT NOT NULL CHECK (price_cents >= 0),
    currency     TEXT NOT NULL,
    stock        BIGINT CHECK (stock >= 0),
    active       BOOLEAN NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT products_sku_key UNIQUE (tenant_id, sku)
);

CREATE TABLE sellers (
    id          UUID PRIMARY KEY NOT NULL,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    email       TEXT,
    phone       TEXT,
    active      BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sellers_tenant ON sellers (tenant_id, id);

CREATE TABLE customers (
    id          UUID PRIMARY KEY NOT NULL,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    contact     TEXT NOT NULL,
    name        TEXT,
    vars        JSONB NOT NULL DEFAULT '{}'::jsonb,
    seller_id   UUID REFERENCES sellers (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT customers_contact_key UNIQUE (tenant_id, contact)
);

CREATE TABLE orders (
    id           UUID PRIMARY KEY NOT NULL,
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    bot_id       UUID REFERENCES bots (id) ON DELETE SET NULL,
    customer_id  UUID NOT NULL REFERENCES customers (id),
    contact      TEXT NOT NULL,
    seller_id    UUID REFERENCES sellers (id) ON DELETE SET NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'paid', 'shipped', 'delivered', 'cancelled')),
    currency     TEXT NOT NULL,
    total_cents  BIGINT NOT NULL,
    notes        TEXT,
    source       TEXT NOT NULL CHECK (source IN ('flow', 'api')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_tenant ON orders (tenant_id, id);
CREATE INDEX orders_customer ON orders (customer_id);

CREATE TABLE order_items (
    order_id          UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line              INTEGER NOT NULL,
    product_id        UUID REFERENCES products (id) ON DELETE SET NULL,
    sku               TEXT,
    name              TEXT NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents  BIGINT NOT NULL,
    PRIMARY KEY (order_id, line)
);

CREATE TABLE api_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    data        JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_events_tenant ON api_events (tenant_id, seq);
