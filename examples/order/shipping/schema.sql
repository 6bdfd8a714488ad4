CREATE TABLE IF NOT EXISTS shipping_shipments (
    id         TEXT      PRIMARY KEY,
    order_id   TEXT      NOT NULL,
    saga_id    TEXT      NOT NULL,
    items      TEXT      NOT NULL,
    status     TEXT      NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled')),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS shipping_shipments_order ON shipping_shipments (order_id);
