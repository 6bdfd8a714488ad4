CREATE TABLE IF NOT EXISTS orders (
    order_id     TEXT      PRIMARY KEY,
    saga_id      TEXT      NOT NULL,
    customer     TEXT      NOT NULL,
    items        TEXT      NOT NULL,
    amount_cents BIGINT    NOT NULL,
    status       TEXT      NOT NULL CHECK (status IN ('created', 'cancelled', 'completed')),
    created_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
