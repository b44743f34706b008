//! The start of every step of a command that calls Ping++ between its transactions: a
//! transaction holding the command's advisory lock (so twins of one command take turns), and
//! either the command's stored answer or the go-ahead.

use deadpool_postgres::{Client, Transaction};

use super::Engine;
use crate::db::commands::{self, Applied, Claim};
use crate::domain::command::Envelope;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::error::EngineError;

/// How a step starts.
pub(super) enum Step<'a> {
    /// The command was answered before: this is its answer, and the step has nothing to do.
    Answered(Applied),
    /// Go on in this transaction.
    Open(Transaction<'a>),
}

/// A step that will store the command's result: its id is claimed in the open transaction.
pub(super) async fn claiming<'a>(
    client: &'a mut Client,
    envelope: &Envelope,
) -> Result<Step<'a>, EngineError> {
    let tx = client.transaction().await?;
    commands::lock_id(&tx, &envelope.id).await?;
    match commands::claim(&tx, envelope).await? {
        Claim::Done(applied) => {
            tx.rollback().await?;
            Ok(Step::Answered(applied))
        }
        Claim::New => Ok(Step::Open(tx)),
    }
}

/// A step that only looks: the command has no stored answer yet, and its id stays unclaimed.
/// An id held by another command in progress (of another type, or with other content) is
/// answered `idempotency_conflict` before anything begins.
pub(super) async fn looking<'a>(
    client: &'a mut Client,
    envelope: &Envelope,
) -> Result<Step<'a>, EngineError> {
    let tx = client.transaction().await?;
    commands::lock_id(&tx, &envelope.id).await?;
    let answer = match commands::lookup(&tx, envelope).await? {
        Some(applied) => Some(applied),
        None if commands::held_by_another_command(&tx, envelope).await? => {
            Some(commands::conflict(envelope))
        }
        None => None,
    };
    match answer {
        Some(applied) => {
            tx.rollback().await?;
            Ok(Step::Answered(applied))
        }
        None => Ok(Step::Open(tx)),
    }
}

/// Claims the id in `tx` and stores `result` (unless the command was answered meanwhile),
/// then commits.
pub(super) async fn conclude(
    tx: Transaction<'_>,
    envelope: &Envelope,
    result: CommandResult,
) -> Result<Applied, EngineError> {
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    store_result(tx, envelope, &result).await
}

/// Stores `result` in a transaction that claimed the id, then commits.
pub(super) async fn store_result(
    tx: Transaction<'_>,
    envelope: &Envelope,
    result: &CommandResult,
) -> Result<Applied, EngineError> {
    let applied = commands::store(&tx, envelope, result).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Stores `result` for a command that recorded nothing before (or answers what was stored), in
/// a transaction of its own.
pub(super) async fn answer(
    engine: &Engine,
    envelope: &Envelope,
    result: CommandResult,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    conclude(tx, envelope, result).await
}

/// [`answer`] with a rejection.
pub(super) async fn refuse(
    engine: &Engine,
    envelope: &Envelope,
    rejection: Rejection,
) -> Result<Applied, EngineError> {
    answer(engine, envelope, super::rejected(envelope, rejection)).await
}

/// The command's stored answer, if it has one (or the conflict of an id another command
/// holds): a command that only asks Ping++ and answers then asks nothing again.
pub(super) async fn answered(
    engine: &Engine,
    envelope: &Envelope,
) -> Result<Option<Applied>, EngineError> {
    let mut client = engine.pool.get().await?;
    let answer = match looking(&mut client, envelope).await? {
        Step::Answered(applied) => Some(applied),
        Step::Open(tx) => {
            tx.rollback().await?;
            None
        }
    };
    Ok(answer)
}
