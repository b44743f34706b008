-- Operators' approvals of cash requests. A request above wallet.cash_review_threshold is
-- settled by the second approval, which must come from another operator: the key makes one
-- approval per operator and request.
CREATE TABLE cash_approvals (
    cash_id     bigint NOT NULL REFERENCES cashes (id),
    operator    bigint NOT NULL,
    command_id  text NOT NULL,
    remark      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cash_id, operator)
);

-- The operator console and `pluspay cashes pending` list the waiting requests, oldest first.
CREATE INDEX cashes_waiting ON cashes (id) WHERE status = 0;

-- The last ledger check of each scope, as the worker (or `pluspay audit`) ran it, for the
-- operator console's health page.
CREATE TABLE ledger_checks (
    scope       text PRIMARY KEY CHECK (scope IN ('full', 'incremental')),
    checked_at  timestamptz NOT NULL,
    ok          boolean NOT NULL,
    millis      double precision NOT NULL,
    report      jsonb NOT NULL
);
