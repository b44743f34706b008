//! Applying commands together in one transaction, with a handful of statements for all of
//! them: claim every id, lock every wallet named, decide each transfer in memory against the
//! balances as the batch leaves them, then write all journals, entries, balances, orders and
//! results at once. The other commands are decided one by one in the same transaction. A
//! single command is a batch of one, so there is one way to apply a command, not two.

use std::collections::{BTreeMap, HashMap};

use super::commands::transfer;
use super::limits::Limits;
use super::{rejected, Engine};
use crate::db::commands::{self, Applied, Claim};
use crate::db::ledger::{lock_wallets, SystemDeltas};
use crate::domain::command::{CommandType, Envelope};
use crate::domain::outcome::CommandResult;
use crate::error::EngineError;

/// Applies `envelopes` (none waits on Ping++) in one transaction and answers each, in order. Any
/// error fails the whole transaction; nothing of it is then written.
pub(super) async fn apply_together(
    engine: &Engine,
    envelopes: &[Envelope],
) -> Result<Vec<Applied>, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let mut answers: Vec<Option<Applied>> = vec![None; envelopes.len()];

    // A twin in the same batch is answered as a redelivery would be, after its first.
    let mut first_with_id: HashMap<&str, usize> = HashMap::new();
    let mut twins = Vec::new();
    let mut unique = Vec::new();
    for (i, envelope) in envelopes.iter().enumerate() {
        match first_with_id.get(envelope.id.as_str()) {
            Some(&first) => twins.push((i, first)),
            None => {
                first_with_id.insert(&envelope.id, i);
                unique.push(i);
            }
        }
    }

    // Transfers are parsed first: the wallets they name are then known for sure.
    let mut parse_rejections = Vec::new();
    let mut requests = Vec::new();
    let mut others = Vec::new();
    for &i in &unique {
        let envelope = &envelopes[i];
        if !engine.policy.custody.offers(envelope.kind) {
            parse_rejections.push((i, crate::domain::custody::not_in_this_mode()));
            continue;
        }
        match transfer::kind_of(envelope.kind) {
            None => others.push(i),
            Some(kind) => {
                match crate::domain::transfer::parse(kind, envelope.user_id, &envelope.data) {
                    Ok(request) => requests.push((i, request)),
                    Err(rejection) => parse_rejections.push((i, rejection)),
                }
            }
        }
    }

    // Claim every id, then lock every wallet the batch will touch, in user order: two batches
    // touching the same wallets then wait for each other instead of deadlocking. The two are
    // not pipelined: the order of the locks must not depend on which statement this connection
    // happened to send first. A replayed command's wallets are locked for nothing, which is
    // harmless.
    let mut users: Vec<i64> = requests
        .iter()
        .flat_map(|(_, r)| [r.from, r.to])
        .chain(others.iter().flat_map(|&i| wallets_named(&envelopes[i])))
        .collect();
    let unique_envelopes: Vec<&Envelope> = unique.iter().map(|&i| &envelopes[i]).collect();
    let claims = commands::claim_many(&tx, &unique_envelopes).await?;
    // A red packet's claim moves money out of its sender's account: the sender's wallet is
    // locked with the others (the lock order of src/engine/commands/redpacket.rs).
    users.extend(
        super::commands::redpacket::senders_named(&tx, others.iter().map(|&i| &envelopes[i]))
            .await?,
    );
    let senders: Vec<(i64, CommandType)> = requests
        .iter()
        .map(|(_, r)| (r.from, r.kind.command()))
        .collect();
    // The senders' own limits are a plain read, sent with the locks in one round trip.
    let (locked, own_limits) = futures_util::future::join(
        async {
            if users.is_empty() {
                Ok(BTreeMap::new())
            } else {
                lock_wallets(&tx, &users).await
            }
        },
        Limits::own_limits(&tx, &senders),
    )
    .await;
    let (mut wallets, own_limits) = (locked?, own_limits?);
    let mut claimed = vec![false; envelopes.len()];
    // An id taken by other content: a twin of this command is no replay of anything either.
    let mut conflicted = vec![false; envelopes.len()];
    for (&i, claim) in unique.iter().zip(claims) {
        match claim {
            Claim::New => claimed[i] = true,
            Claim::Done(applied) => {
                conflicted[i] = !applied.replayed;
                answers[i] = Some(applied);
            }
        }
    }
    requests.retain(|(i, _)| claimed[*i]);
    others.retain(|&i| claimed[i]);
    let mut results: Vec<(usize, CommandResult)> = parse_rejections
        .into_iter()
        .filter(|(i, _)| claimed[*i])
        .map(|(i, rejection)| (i, rejected(&envelopes[i], rejection)))
        .collect();

    let mut limits = Limits::load_with(&tx, &engine.policy, &senders, &own_limits).await?;
    let mut transfers = Vec::with_capacity(requests.len());
    for (i, request) in requests {
        match transfer::decide(request, &mut wallets, &mut limits)? {
            Ok(transfer) => transfers.push((i, transfer)),
            Err(rejection) => results.push((i, rejected(&envelopes[i], rejection))),
        }
    }
    limits.record(&tx).await?;
    let mut system = SystemDeltas::default();
    if !transfers.is_empty() {
        results.extend(transfer::write(&tx, envelopes, &transfers, &wallets, &mut system).await?);
    }

    // Commands through a shared system account (cash, transform) go last, so that whatever
    // they lock is held as briefly as possible. Within a batch the order is free, as it is
    // between concurrent deliveries.
    others.sort_by_key(|&i| touches_system_accounts(envelopes[i].kind));
    for i in others {
        let envelope = &envelopes[i];
        let result = match super::decide_in(engine, &tx, envelope, &mut system).await? {
            Ok(result) => result,
            Err(rejection) => rejected(envelope, rejection),
        };
        results.push((i, result));
    }

    if !results.is_empty() {
        let to_store: Vec<(&Envelope, &CommandResult)> = results
            .iter()
            .map(|(i, result)| (&envelopes[*i], result))
            .collect();
        let stored = commands::store_many(&tx, &to_store).await?;
        for ((i, _), applied) in results.iter().zip(stored) {
            answers[*i] = Some(applied);
        }
    }
    system.apply(&tx).await?;
    tx.commit().await?;

    for (i, first) in twins {
        let earlier = answers[first]
            .as_ref()
            .expect("a first command is answered");
        answers[i] = Some(
            if !conflicted[first] && envelopes[first].fingerprint() == envelopes[i].fingerprint() {
                Applied {
                    replayed: true,
                    ..earlier.clone()
                }
            } else {
                commands::conflict(&envelopes[i])
            },
        );
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every command of the batch was answered"))
        .collect())
}

pub(super) fn touches_system_accounts(kind: CommandType) -> bool {
    matches!(
        kind,
        CommandType::Cash
            | CommandType::CashApprove
            | CommandType::CashReject
            | CommandType::Transform
    )
}

/// The wallets a command other than a transfer moves, locked with the batch's others: the
/// acting user's for a cash request, a transform, the holds and the red packets, and a
/// capture's receiver's (a claim's sender's: `senders_named`).
fn wallets_named(envelope: &Envelope) -> Vec<i64> {
    match envelope.kind {
        CommandType::Cash
        | CommandType::Transform
        | CommandType::HoldCreate
        | CommandType::HoldRelease
        | CommandType::RedpacketCreate
        | CommandType::RedpacketClaim => vec![envelope.user_id],
        CommandType::HoldCapture => {
            let mut users = vec![envelope.user_id];
            users.extend(crate::domain::hold::user_named(&envelope.data));
            users
        }
        // The operator's controls lock the wallet they are about, not the operator's.
        CommandType::WalletFreeze | CommandType::WalletUnfreeze | CommandType::LimitsSet => {
            crate::domain::hold::user_named(&envelope.data)
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}
