-- The payments ledger: charges, and refunds that each point at the charge they return.
CREATE TABLE IF NOT EXISTS payment_ledger (
    id           TEXT      PRIMARY KEY,
    order_id     TEXT      NOT NULL,
    saga_id      TEXT      NOT NULL,
    kind         TEXT      NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount_cents BIGINT    NOT NULL,
    charge_id    TEXT,
    created_at   TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS payment_ledger_order ON payment_ledger (order_id);
CREATE INDEX IF NOT EXISTS payment_ledger_saga ON payment_ledger (saga_id);
