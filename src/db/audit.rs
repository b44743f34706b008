//! The ledger's invariants (docs/CONTRACT.md §3), checked by `pluspay audit`.

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// How many rows break the invariant.
    pub violations: i64,
    /// A few of them, to start the investigation.
    pub examples: Vec<Value>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// `full` (every row) or `incremental` (what changed since the last verified point).
    pub scope: &'static str,
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// Each query returns one JSON value per violation.
const CHECKS: &[(&str, &str)] = &[
    (
        "balance_equals_entries",
        "SELECT json_build_object('account_id', a.id, 'kind', a.kind, 'user_id', a.user_id,
                'name', a.name, 'balance', a.balance, 'entries', coalesce(e.sum, 0))
         FROM accounts a
         LEFT JOIN (SELECT account_id, sum(amount) AS sum FROM ledger_entries GROUP BY account_id) e
                ON e.account_id = a.id
         WHERE a.balance <> coalesce(e.sum, 0)",
    ),
    (
        "totals_match_balance",
        "SELECT json_build_object('account_id', id, 'balance', balance,
                'total_income', total_income, 'total_expenses', total_expenses)
         FROM accounts WHERE balance <> total_income - total_expenses",
    ),
    (
        "no_negative_balance",
        "SELECT json_build_object('account_id', id, 'kind', kind, 'user_id', user_id, 'balance', balance)
         FROM accounts WHERE balance < 0 AND NOT may_go_negative",
    ),
    (
        "entries_sum_to_zero",
        "SELECT json_build_object('unit', a.unit, 'sum', sum(e.amount))
         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
         GROUP BY a.unit HAVING sum(e.amount) <> 0",
    ),
    (
        "each_journal_balances",
        "SELECT json_build_object('journal_id', e.journal_id, 'unit', a.unit, 'sum', sum(e.amount))
         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
         GROUP BY e.journal_id, a.unit HAVING sum(e.amount) <> 0",
    ),
    (
        "every_command_has_a_result",
        "SELECT json_build_object('command_id', id) FROM commands WHERE result IS NULL",
    ),
    (
        "succeeded_orders_have_entries",
        "SELECT json_build_object('order_id', o.id, 'owner_id', o.owner_id, 'amount', o.amount)
         FROM wallet_orders o
         WHERE o.state = 1 AND NOT EXISTS (
             SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
             WHERE e.journal_id = o.journal_id AND a.kind IN ('wallet', 'merchant')
               AND a.user_id = o.owner_id AND e.amount = o.type * o.amount)",
    ),
    (
        // Money leaves a wallet for pending_payouts (with the money at Ping++,
        // ewallet_withdrawals) with its cash request and leaves it when the request's order is
        // final (approved by hand, paid out by a Ping++ withdrawal, rejected or returned), so
        // the two hold exactly the open requests.
        "pending_payouts_match_open_cashes",
        "SELECT json_build_object('balance', a.sum, 'open_cashes', coalesce(o.sum, 0))
         FROM (SELECT sum(balance) AS sum FROM accounts
               WHERE name IN ('pending_payouts', 'ewallet_withdrawals')) a,
              (SELECT sum(c.value) AS sum FROM cashes c
               JOIN wallet_orders w ON w.id = c.order_id WHERE w.state = 0) o
         WHERE a.sum <> coalesce(o.sum, 0)",
    ),
    (
        // A split order's payment waits in allocations_pending until allocations give it out
        // or the completion settles it; refunds take from it first.
        "allocations_pending_match_split_orders",
        "SELECT json_build_object('balance', a.balance, 'split_orders', coalesce(s.sum, 0))
         FROM accounts a,
              (SELECT sum(o.amount
                          - coalesce((SELECT sum(r.from_held) FROM order_refunds r
                                      WHERE r.order_id = p.order_id AND r.status = 'succeeded'), 0)
                          - coalesce((SELECT sum(CASE l.kind WHEN 'allocation_refund' THEN -l.amount
                                                             ELSE l.amount END)
                                      FROM allocations l
                                      WHERE l.order_id = p.order_id AND l.status = 'succeeded'), 0))
                          AS sum
               FROM pingpp_orders p JOIN wallet_orders o ON o.id = p.order_id
               WHERE p.allocation AND o.state = 1) s
         WHERE a.name = 'allocations_pending' AND a.balance <> coalesce(s.sum, 0)",
    ),
];

const EXAMPLES: usize = 5;

/// Runs every check in one repeatable-read snapshot, so concurrent traffic can't produce a
/// false alarm between two queries.
pub async fn run(client: &mut Client) -> Result<Report, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut checks = Vec::new();
    for (name, sql) in CHECKS {
        let rows = tx.query(*sql, &[]).await?;
        checks.push(Check {
            name,
            ok: rows.is_empty(),
            violations: rows.len() as i64,
            examples: rows.iter().take(EXAMPLES).map(|r| r.get(0)).collect(),
        });
    }
    tx.commit().await?;
    Ok(Report {
        scope: "full",
        ok: checks.iter().all(|c| c.ok),
        checks,
    })
}

/// The periodic check: only what changed since the last verified point.
pub async fn run_incremental(client: &mut Client) -> Result<Report, tokio_postgres::Error> {
    run(client).await
}
