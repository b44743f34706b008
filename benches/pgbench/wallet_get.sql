-- `wallet.get` as src/engine/mod.rs applies it: claim the command id, read the wallet summary,
-- store the result (reads keep their result under their id too).
\set user random(1, :wallets)
BEGIN;
INSERT INTO commands (id, type, fingerprint)
    VALUES ('pgb-' || gen_random_uuid(), 'wallet.get',
            sha256(convert_to(:user::text || '/wallet.get', 'UTF8')))
    RETURNING id AS cmd \gset
SELECT 1 FROM recharges WHERE command_id = :cmd;
SELECT coalesce(max(balance) FILTER (WHERE kind = 'wallet'), 0) AS balance,
       coalesce(max(total_income) FILTER (WHERE kind = 'wallet'), 0) AS income,
       coalesce(max(total_expenses) FILTER (WHERE kind = 'wallet'), 0) AS expenses,
       coalesce(max(balance) FILTER (WHERE kind = 'points'), 0) AS points
  FROM accounts WHERE user_id = :user AND kind IN ('wallet', 'points') \gset
UPDATE commands SET status = 'succeeded',
       result = json_build_object('id', id, 'type', type, 'user_id', :user::bigint,
                    'status', 'succeeded', 'message', json_build_array(),
                    'data', json_build_object('balance', :balance::bigint,
                        'total_income', :income::bigint, 'total_expenses', :expenses::bigint,
                        'points', :points::bigint, 'labels', json_build_array(550, 2000, 9900),
                        'ratio', 1, 'rule', '', 'cash', json_build_array('alipay', 'wechat'),
                        'case_min_amount', 100,
                        'recharge_type', json_build_array('applepay_upacp', 'alipay', 'alipay_wap',
                            'alipay_pc_direct', 'alipay_qr', 'wx', 'wx_wap')))
 WHERE id = :cmd;
COMMIT;
