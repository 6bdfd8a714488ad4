CREATE TABLE IF NOT EXISTS inventory_stock (
    sku       TEXT   PRIMARY KEY,
    initial   BIGINT NOT NULL,
    available BIGINT NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS inventory_reservations (
    saga_id     TEXT      NOT NULL,
    sku         TEXT      NOT NULL,
    order_id    TEXT      NOT NULL,
    qty         BIGINT    NOT NULL CHECK (qty > 0),
    status      TEXT      NOT NULL CHECK (status IN ('reserved', 'released')),
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    released_at TIMESTAMP,
    PRIMARY KEY (saga_id, sku)
);
CREATE INDEX IF NOT EXISTS inventory_reservations_order ON inventory_reservations (order_id);
