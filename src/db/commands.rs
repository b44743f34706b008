//! The command log: each command id is applied once, in the same transaction as its effect and
//! its stored result, so a redelivery replays the result instead of applying it again.

use deadpool_postgres::Transaction;

use crate::domain::command::{Envelope, IdHolder};
use crate::domain::outcome::{idempotency_conflict, CommandResult, Rejection, Status};
use crate::error::EngineError;

/// What applying a command produced: the exact result message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub body: String,
    pub status: Status,
    pub routing_key: String,
    /// The id was seen before with the same content: nothing was applied this time.
    pub replayed: bool,
}

/// Whether this transaction may apply the command.
pub enum Claim {
    /// The id is new: its row now exists (without a result) until this transaction ends.
    New,
    /// The id was used before: publish this, apply nothing. `replayed` tells the earlier
    /// result (true) from an `idempotency_conflict` (false).
    Done(Applied),
}

/// Serialises the steps of one command id (a command and its twins) for the rest of the
/// transaction: commands that call Ping++ between transactions take this at every step.
pub async fn lock_id(tx: &Transaction<'_>, command_id: &str) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .await?,
        &[&command_id],
    )
    .await?;
    Ok(())
}

/// Claims the command's id. A concurrent twin waits on the insert until the first commits.
pub async fn claim(tx: &Transaction<'_>, envelope: &Envelope) -> Result<Claim, EngineError> {
    let mut claims = claim_many(tx, &[envelope]).await?;
    Ok(claims.remove(0))
}

/// The earlier outcome of this id, if it has one: its stored result when the content is the
/// same, else an `idempotency_conflict` (not stored: the id's one result stays the first's).
pub async fn lookup(
    tx: &Transaction<'_>,
    envelope: &Envelope,
) -> Result<Option<Applied>, EngineError> {
    let Some(row) = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT fingerprint, status, result::text AS result, type FROM commands
                 WHERE id = $1 AND result IS NOT NULL",
            )
            .await?,
            &[&envelope.id],
        )
        .await?
    else {
        return Ok(None);
    };
    let stored: Vec<u8> = row.get("fingerprint");
    if stored != envelope.fingerprint() {
        return Ok(Some(conflict(envelope)));
    }
    let status = match row.get::<_, &str>("status") {
        "succeeded" => Status::Succeeded,
        _ => Status::Rejected,
    };
    Ok(Some(Applied {
        body: row.get("result"),
        status,
        routing_key: format!("{}.{}", row.get::<_, &str>("type"), status.as_str()),
        replayed: true,
    }))
}

/// The id is taken by a command with other content.
pub fn conflict(envelope: &Envelope) -> Applied {
    unstored(envelope, idempotency_conflict())
}

/// A rejection answered without being stored under the command's id.
pub fn unstored(envelope: &Envelope, rejection: Rejection) -> Applied {
    let result = CommandResult::rejected(
        &envelope.id,
        envelope.kind.as_str(),
        envelope.user_id,
        rejection,
    );
    Applied {
        body: serde_json::to_string(&result).expect("a result serializes"),
        status: Status::Rejected,
        routing_key: result.routing_key(),
        replayed: false,
    }
}

/// Stores the result of a claimed command; it becomes durable with the transaction.
pub async fn store(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    result: &CommandResult,
) -> Result<Applied, EngineError> {
    let mut stored = store_many(tx, &[(envelope, result)]).await?;
    Ok(stored.remove(0))
}

/// The columns telling which progress table (of a command that calls Ping++ between its
/// transactions) holds the command id `id` for a command with other content than
/// `fingerprint` (SQL expressions). The type is part of the fingerprint, so another type is
/// other content; a redelivery of the command in progress is not held out.
fn holders(id: &str, fingerprint: &str) -> String {
    let held = |table: &str| {
        format!(
            "EXISTS (SELECT 1 FROM {table} h WHERE h.command_id = {id}
                     AND h.fingerprint <> {fingerprint})"
        )
    };
    format!(
        "{} AS held_by_recharge, {} AS held_by_other_payout, {} AS held_by_deposit,
         {} AS held_by_application, {} AS held_by_sub_merchant,
         {} AS held_by_merchant_application, {} AS held_by_purchase, {} AS held_by_refund,
         {} AS held_by_allocation, {} AS held_by_recharge_refund",
        held("recharges"),
        held("cash_payouts"),
        held("deposits"),
        held("cus_applications"),
        held("sub_merchants"),
        held("merchant_applications"),
        held("pingpp_orders"),
        held("order_refunds"),
        held("allocations"),
        held("recharge_refunds"),
    )
}

fn holder_of(row: &tokio_postgres::Row) -> Option<IdHolder> {
    [
        ("held_by_recharge", IdHolder::Recharge),
        ("held_by_other_payout", IdHolder::PayoutWithOtherContent),
        ("held_by_deposit", IdHolder::Deposit),
        ("held_by_application", IdHolder::Application),
        ("held_by_sub_merchant", IdHolder::SubMerchant),
        (
            "held_by_merchant_application",
            IdHolder::MerchantApplication,
        ),
        ("held_by_purchase", IdHolder::Purchase),
        ("held_by_refund", IdHolder::Refund),
        ("held_by_allocation", IdHolder::Allocation),
        ("held_by_recharge_refund", IdHolder::RechargeRefund),
    ]
    .into_iter()
    .find(|(column, _)| row.get::<_, bool>(*column))
    .map(|(_, holder)| holder)
}

/// Whether the command's id is held by another command in progress (the rule is
/// `IdHolder`): such a command must not begin at all.
pub async fn held_by_another_command(
    tx: &Transaction<'_>,
    envelope: &Envelope,
) -> Result<bool, EngineError> {
    let sql = format!("SELECT {}", holders("$1", "$2"));
    let row = tx
        .query_one(
            &tx.prepare_cached(&sql).await?,
            &[&envelope.id, &envelope.fingerprint().as_slice()],
        )
        .await?;
    Ok(holder_of(&row).is_some())
}

/// Claims several distinct ids in one statement; the answer for each, in the order given. An id
/// still held by a command in progress with other content (see `IdHolder`) is
/// answered `idempotency_conflict` and leaves no trace.
pub async fn claim_many(
    tx: &Transaction<'_>,
    envelopes: &[&Envelope],
) -> Result<Vec<Claim>, EngineError> {
    let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
    let kinds: Vec<&str> = envelopes.iter().map(|e| e.kind.as_str()).collect();
    let fingerprints: Vec<Vec<u8>> = envelopes.iter().map(|e| e.fingerprint().to_vec()).collect();
    // In id order, so two batches claiming the same ids (a redelivery) wait instead of deadlock.
    let sql = format!(
        "INSERT INTO commands (id, type, fingerprint)
                 SELECT i, t, f FROM unnest($1::text[], $2::text[], $3::bytea[])
                     AS x(i, t, f) ORDER BY i
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id, {holders}",
        holders = holders("commands.id", "commands.fingerprint")
    );
    let rows = tx
        .query(
            &tx.prepare_cached(&sql).await?,
            &[&ids, &kinds, &fingerprints],
        )
        .await?;
    let mut new = std::collections::HashMap::with_capacity(rows.len());
    let mut held = Vec::new();
    for row in &rows {
        let id: String = row.get("id");
        let holder = holder_of(row);
        let taken = holder.is_some();
        if taken {
            held.push(id.clone());
        }
        new.insert(id, taken);
    }
    if !held.is_empty() {
        // Held by a command in progress: leave no trace.
        tx.execute(
            &tx.prepare_cached("DELETE FROM commands WHERE id = ANY($1)")
                .await?,
            &[&held],
        )
        .await?;
    }
    let mut claims = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        claims.push(match new.get(envelope.id.as_str()) {
            Some(false) => Claim::New,
            Some(true) => Claim::Done(conflict(envelope)),
            None => match lookup(tx, envelope).await? {
                Some(done) => Claim::Done(done),
                // A read's stored result removed by retention between the two statements: the
                // read is answered afresh, as after its removal.
                None if envelope.kind.is_local_read() && claim_again(tx, envelope).await? => {
                    Claim::New
                }
                None => {
                    return Err(EngineError::Broken(format!(
                        "command {} exists without a result",
                        envelope.id
                    )))
                }
            },
        });
    }
    Ok(claims)
}

/// Claims one id whose row was gone when it was looked up; whether this claim took it.
async fn claim_again(tx: &Transaction<'_>, envelope: &Envelope) -> Result<bool, EngineError> {
    let inserted = tx
        .execute(
            &tx.prepare_cached(
                "INSERT INTO commands (id, type, fingerprint) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?,
            &[
                &envelope.id,
                &envelope.kind.as_str(),
                &envelope.fingerprint().as_slice(),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Stores the results of several claimed commands in one statement.
pub async fn store_many(
    tx: &Transaction<'_>,
    results: &[(&Envelope, &CommandResult)],
) -> Result<Vec<Applied>, EngineError> {
    let ids: Vec<&str> = results.iter().map(|(e, _)| e.id.as_str()).collect();
    let statuses: Vec<&str> = results.iter().map(|(_, r)| r.status.as_str()).collect();
    let bodies: Vec<String> = results
        .iter()
        .map(|(_, r)| serde_json::to_string(r).expect("a result serializes"))
        .collect();
    let stored = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE commands SET status = u.s, result = u.r::json
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(i, s, r)
                 WHERE commands.id = u.i",
            )
            .await?,
            &[&ids, &statuses, &bodies],
        )
        .await?;
    if stored != results.len() as u64 {
        return Err(EngineError::Broken(format!(
            "stored {stored} results of {}",
            results.len()
        )));
    }
    Ok(results
        .iter()
        .zip(bodies)
        .map(|((_, result), body)| Applied {
            routing_key: result.routing_key(),
            status: result.status,
            body,
            replayed: false,
        })
        .collect())
}

/// The types of `CommandType::is_local_read`, as the predicate of the index
/// `commands_reads_by_age` spells them: the planner uses that index only for this very list.
pub const LOCAL_READS: &str =
    "'orders.list', 'orders.get', 'cashes.list', 'charges.list', 'charges.get', 'wallet.get',
     'wallet.changes', 'wallet.statement', 'wallet.proof'";

/// Removes up to `batch` stored results of reads older than `older_than`, oldest first, and
/// says how many. Rows a command in flight has locked are skipped, so traffic never waits on
/// this; a read redelivered after its row is gone is answered afresh.
pub async fn remove_expired_reads(
    client: &tokio_postgres::Client,
    older_than: std::time::Duration,
    batch: i64,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "DELETE FROM commands WHERE id IN (
             SELECT id FROM commands
             WHERE type IN ({LOCAL_READS}) AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT $2
             FOR UPDATE SKIP LOCKED)"
    );
    client
        .execute(&sql, &[&older_than.as_secs_f64(), &batch])
        .await
}

/// How old the oldest stored result of a read is (zero when there is none).
pub async fn oldest_read_age(
    client: &tokio_postgres::Client,
) -> Result<std::time::Duration, tokio_postgres::Error> {
    let sql = format!(
        "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
         FROM commands WHERE type IN ({LOCAL_READS})"
    );
    let secs: f64 = client.query_one(&sql, &[]).await?.get(0);
    Ok(std::time::Duration::from_secs_f64(secs.max(0.0)))
}

#[cfg(test)]
mod tests {
    use crate::domain::command::CommandType;

    #[test]
    fn the_list_of_reads_is_the_index_predicate_the_trigger_exemption_and_the_domain_rule() {
        let migration = include_str!("../../migrations/0023_wallet_statements.sql");
        let spelled: String = super::LOCAL_READS.split_whitespace().collect();
        let indexed: String = migration[migration.find("WHERE type IN (").unwrap()..]
            .split_whitespace()
            .collect();
        assert!(
            indexed.starts_with(&format!("WHEREtypeIN({spelled});")),
            "{indexed}"
        );
        // The trigger that lets reads' rows go without calling for the full ledger check.
        let exempted: String = migration[migration.find("OLD.type NOT IN (").unwrap()..]
            .split_whitespace()
            .collect();
        assert!(
            exempted.starts_with(&format!("OLD.typeNOTIN({spelled}))")),
            "{exempted}"
        );
        let reads: Vec<String> = CommandType::ALL
            .into_iter()
            .filter(|t| t.is_local_read())
            .map(|t| format!("'{}'", t.as_str()))
            .collect();
        assert_eq!(reads.join(","), spelled);
    }
}
