//! The command log: each command id is applied once, in the same transaction as its effect and
//! its stored result, so a redelivery replays the result instead of applying it again.

use deadpool_postgres::{Pool, Transaction};
use serde_json::json;

use super::wallets::{insert_orders, lock_wallets, post_journal};
use super::DbError;
use crate::domain::command::{CommandType, Envelope};
use crate::domain::outcome::{Code, CommandResult, Rejection, Status};
use crate::domain::transfer::{self, TransferKind};

/// What applying a command produced: the exact result message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub body: String,
    pub status: Status,
    pub routing_key: String,
    /// The id was seen before with the same content: nothing was applied this time.
    pub replayed: bool,
}

/// The command types this version applies; any other is dead-lettered unapplied.
pub fn supports(kind: CommandType) -> bool {
    matches!(kind, CommandType::Transfer | CommandType::Reward)
}

pub const MSG_IDEMPOTENCY_CONFLICT: &str = "该请求ID已用于另一个不同的请求";

/// Applies a command exactly once. A transient error leaves nothing behind (the transaction
/// rolls back) and may be retried freely.
pub async fn apply(pool: &Pool, envelope: &Envelope) -> Result<Applied, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let fingerprint = envelope.fingerprint();
    let inserted = tx
        .execute(
            "INSERT INTO commands (id, type, user_id, fingerprint) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[
                &envelope.id,
                &envelope.kind.as_str(),
                &envelope.user_id,
                &fingerprint.as_slice(),
            ],
        )
        .await?;
    if inserted == 0 {
        // Seen before (a concurrent twin waited on the insert above until the first committed).
        let row = tx
            .query_one(
                "SELECT fingerprint, status, result::text, type FROM commands WHERE id = $1",
                &[&envelope.id],
            )
            .await?;
        tx.rollback().await?;
        let stored: Vec<u8> = row.get(0);
        if stored == fingerprint {
            let status = match row.get::<_, &str>(1) {
                "succeeded" => Status::Succeeded,
                _ => Status::Rejected,
            };
            return Ok(Applied {
                body: row.get(2),
                status,
                routing_key: format!("{}.{}", row.get::<_, &str>(3), status.as_str()),
                replayed: true,
            });
        }
        // Not stored: the id's one result stays the first command's.
        let result = CommandResult::rejected(
            &envelope.id,
            envelope.kind.as_str(),
            envelope.user_id,
            Rejection::field(Code::IdempotencyConflict, "id", MSG_IDEMPOTENCY_CONFLICT),
        );
        return Ok(Applied {
            body: serde_json::to_string(&result).expect("a result serializes"),
            status: Status::Rejected,
            routing_key: result.routing_key(),
            replayed: false,
        });
    }

    let result = match envelope.kind {
        CommandType::Transfer => apply_transfer(&tx, envelope, TransferKind::Transfer).await?,
        CommandType::Reward => apply_transfer(&tx, envelope, TransferKind::Reward).await?,
        other => {
            return Err(DbError::Fatal(format!(
                "command type {} is not supported",
                other.as_str()
            )))
        }
    };
    let body = serde_json::to_string(&result).expect("a result serializes");
    tx.execute(
        "UPDATE commands SET status = $2, result = $3::text::json WHERE id = $1",
        &[&envelope.id, &result.status.as_str(), &body],
    )
    .await?;
    tx.commit().await?;
    Ok(Applied {
        routing_key: result.routing_key(),
        status: result.status,
        body,
        replayed: false,
    })
}

fn rejected(envelope: &Envelope, rejection: Rejection) -> CommandResult {
    CommandResult::rejected(
        &envelope.id,
        envelope.kind.as_str(),
        envelope.user_id,
        rejection,
    )
}

async fn apply_transfer(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    kind: TransferKind,
) -> Result<CommandResult, DbError> {
    let request = match transfer::parse(kind, envelope.user_id, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(rejected(envelope, rejection)),
    };
    let wallets = lock_wallets(tx, &[request.from, request.to]).await?;
    let balance = |user: i64| wallets.get(&user).map_or(0, |w| w.balance);
    let journal = match transfer::decide(&request, balance(request.from), balance(request.to)) {
        Ok(journal) => journal,
        Err(rejection) => return Ok(rejected(envelope, rejection)),
    };
    let journal_id =
        post_journal(tx, envelope.kind.as_str(), &envelope.id, &journal, &wallets).await?;
    let mut orders = insert_orders(
        tx,
        &envelope.id,
        Some(journal_id),
        &transfer::orders(&request),
    )
    .await?;
    let sender_order = orders.swap_remove(0);
    Ok(CommandResult::succeeded(
        &envelope.id,
        envelope.kind.as_str(),
        envelope.user_id,
        kind.success_message(),
        json!({ "order": sender_order }),
    ))
}
