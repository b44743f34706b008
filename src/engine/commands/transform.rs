//! `transform`: fen from the wallet to `transform_revenue`, and points from `points_issued` to
//! the user's points, at `wallet.ratio`. A batch's transforms are decided in memory with its
//! transfers (`decide`), against the wallets and points accounts as the earlier ones left them,
//! and written with them (src/engine/batch.rs).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::track;
use crate::db::ledger::LockedWallet;
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::Journal;
use crate::domain::order::OrderDraft;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::transform::{self, TransformRequest};
use crate::engine::limits::{admit_sending, Limits};
use crate::engine::succeeded;
use crate::error::EngineError;

/// A transform decided and not yet written.
pub(crate) struct DecidedTransform {
    request: TransformRequest,
    journal: Journal,
}

/// Decides a transform against the wallet and the points balance (by user, locked) as the
/// batch's earlier commands left them, and the sender's daily limit, and moves those in memory
/// when it goes through.
pub(crate) fn decide(
    request: TransformRequest,
    wallets: &mut BTreeMap<i64, LockedWallet>,
    points: &mut HashMap<i64, i64>,
    limits: &mut Limits,
) -> Result<Result<DecidedTransform, Rejection>, EngineError> {
    let user = request.user;
    let points_balance = points
        .get_mut(&user)
        .ok_or_else(|| EngineError::Broken(format!("points of user {user} were not locked")))?;
    let sending = (CommandType::Transform, user, request.amount);
    let decided = admit_sending(wallets, limits, sending, |figures| {
        transform::decide(&request, figures, *points_balance)
    });
    let journal = match decided {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
    *points_balance += request.points;
    track(wallets, &journal)?;
    Ok(Ok(DecidedTransform { request, journal }))
}

impl DecidedTransform {
    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    pub(crate) fn orders(&self) -> Vec<OrderDraft> {
        vec![transform::order(&self.request)]
    }

    /// The result, with its order.
    pub(crate) fn answer(&self, envelope: &Envelope, orders: &[Value]) -> CommandResult {
        let data = json!({ "order": orders[0], "points": self.request.points });
        succeeded(envelope, Some(transform::MSG_DONE), data)
    }
}
