-- A tenant's business data: catalogue, sellers, customers (one per tenant and contact),
-- orders with their items (prices as sold, in minor units), and the event log the REST
-- API streams to dashboards (a bounded number of events per tenant, resumable by id).

CREATE TABLE products (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sku          TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    price_cents  INTEGER NOT NULL CHECK (price_cents >= 0),
    currency     TEXT NOT NULL,
    stock        INTEGER CHECK (stock >= 0),
    active       INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CONSTRAINT products_sku_key UNIQUE (tenant_id, sku)
) STRICT;

CREATE TABLE sellers (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    email       TEXT,
    phone       TEXT,
    active      INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX sellers_tenant ON sellers (tenant_id, id);

CREATE TABLE customers (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    contact     TEXT NOT NULL,
    name        TEXT,
    vars        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(vars)),
    seller_id   TEXT REFERENCES sellers (id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT customers_contact_key UNIQUE (tenant_id, contact)
) STRICT;

CREATE TABLE orders (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    bot_id       TEXT REFERENCES bots (id) ON DELETE SET NULL,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    contact      TEXT NOT NULL,
    seller_id    TEXT REFERENCES sellers (id) ON DELETE SET NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'paid', 'shipped', 'delivered', 'cancelled')),
    currency     TEXT NOT NULL,
    total_cents  INTEGER NOT NULL,
    notes        TEXT,
    source       TEXT NOT NULL CHECK (source IN ('flow', 'api')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;
CREATE INDEX orders_tenant ON orders (tenant_id, id);
CREATE INDEX orders_customer ON orders (customer_id);

CREATE TABLE order_items (
    order_id          TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line              INTEGER NOT NULL,
    product_id        TEXT REFERENCES products (id) ON DELETE SET NULL,
    sku               TEXT,
    name              TEXT NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents  INTEGER NOT NULL,
    PRIMARY KEY (order_id, line)
) STRICT;

CREATE TABLE api_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL CHECK (json_valid(data)),
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX api_events_tenant ON api_events (tenant_id, seq);
