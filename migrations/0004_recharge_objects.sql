-- Recharges through Ping++ recharge objects (`pingpp.recharge_mode = "recharge_object"`): the
-- user fee and balance bonus each have their own system account, and a recharge's progress
-- row keeps exactly what was asked of Ping++ for it.

-- Fees kept by the platform out of recharges: only ever credited.
-- Balance bonuses the platform gives on recharges: goes negative as bonuses are paid.
INSERT INTO accounts (kind, name, unit, may_go_negative) VALUES
    ('system', 'recharge_fees', 'fen', false),
    ('system', 'recharge_bonuses', 'fen', true);

-- In recharge-object mode `charge_request` holds the `charge[...]` part of the request and
-- `recharge_request` the whole request; the order's amount is what the wallet gets
-- (charge amount - user_fee + balance_bonus).
ALTER TABLE recharges
    ADD COLUMN user_fee         bigint CHECK (user_fee >= 0),
    ADD COLUMN balance_bonus    bigint CHECK (balance_bonus >= 0),
    ADD COLUMN recharge_request json,
    ADD COLUMN recharge_id      text UNIQUE,
    ADD COLUMN recharge         json,
    ADD CHECK (user_fee IS NULL OR balance_bonus IS NULL),
    ADD CHECK ((recharge_id IS NULL) = (recharge IS NULL));
