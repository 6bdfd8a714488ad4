-- The participant barrier: what this service has done for each (saga, step, action), and the reply
-- it gave, so a repeated command is answered from here instead of running again.
CREATE TABLE sagaflow_barrier (
    saga_id    TEXT      NOT NULL,
    step       TEXT      NOT NULL,
    action     TEXT      NOT NULL CHECK (action IN ('forward', 'compensate')),
    outcome    TEXT      NOT NULL CHECK (outcome IN ('pending', 'success', 'failure', 'cancelled')),
    output     TEXT,
    reason     TEXT      NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (saga_id, step, action)
) WITHOUT ROWID;
