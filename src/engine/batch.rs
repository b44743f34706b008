//! Applying commands together in one transaction, with a handful of statements for all of
//! them: claim every id, lock every wallet named (then the holds, red packets and points
//! accounts), decide each transfer, hold command, red packet claim and transform in memory
//! against the balances as the batch leaves them, then write all their journals, entries,
//! balances, orders and results at once (`Decided::write`). The other commands (cash, red
//! packets made, the operators' controls, reads) are decided one by one in the same
//! transaction, after those. Within a batch the order is free, as it is between concurrent
//! deliveries: its transfers are decided first, then its hold commands, its claims, its
//! transforms, then the others, each kind in the order given. A single command is a batch of
//! one, so there is one way to apply a command, not two.

use std::collections::{BTreeMap, HashMap};

use super::commands::hold::{self, HoldCommand};
use super::commands::{redpacket, transfer, transform, wallet_version, with_version};
use super::limits::Limits;
use super::{rejected, Engine};
use crate::db::commands::{self, Applied, Claim};
use crate::db::ledger::{ensure_user_accounts, lock_points, lock_wallets, SystemDeltas};
use crate::db::ledger::{insert_orders_of, post_journals, JournalDraft, LockedWallet};
use crate::db::{holds, redpackets};
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::AccountRef;
use crate::domain::order::OrderDraft;
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

    // The commands decided in memory are parsed first: the wallets they name are then known
    // for sure.
    let mut parse_rejections = Vec::new();
    let mut requests = Vec::new();
    let mut hold_commands: Vec<(usize, HoldCommand)> = Vec::new();
    let mut claims: Vec<(usize, i64)> = Vec::new();
    let mut transforms = Vec::new();
    let mut others = Vec::new();
    for &i in &unique {
        let envelope = &envelopes[i];
        if !engine.policy.custody.offers(envelope.kind) {
            parse_rejections.push((i, crate::domain::custody::not_in_this_mode()));
            continue;
        }
        let parsed = if let Some(kind) = transfer::kind_of(envelope.kind) {
            crate::domain::transfer::parse(kind, envelope.user_id, &envelope.data)
                .map(|request| requests.push((i, request)))
        } else if let Some(command) = hold::parse(envelope) {
            command.map(|command| hold_commands.push((i, command)))
        } else if envelope.kind == CommandType::RedpacketClaim {
            crate::domain::redpacket::parse_packet(&envelope.data)
                .map(|packet| claims.push((i, packet)))
        } else if envelope.kind == CommandType::Transform {
            crate::domain::transform::parse(envelope.user_id, &envelope.data, &engine.policy)
                .map(|request| transforms.push((i, request)))
        } else {
            others.push(i);
            Ok(())
        };
        if let Err(rejection) = parsed {
            parse_rejections.push((i, rejection));
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
        .chain(hold_commands.iter().flat_map(|(i, command)| {
            let actor = envelopes[*i].user_id;
            [Some(actor), command.receiver()].into_iter().flatten()
        }))
        .chain(claims.iter().map(|&(i, _)| envelopes[i].user_id))
        .chain(transforms.iter().map(|(_, r)| r.user))
        .chain(others.iter().flat_map(|&i| wallets_named(&envelopes[i])))
        .collect();
    let unique_envelopes: Vec<&Envelope> = unique.iter().map(|&i| &envelopes[i]).collect();
    // A red packet's claim moves money out of its sender's account: the sender's wallet is
    // locked with the others (the lock order of src/engine/commands/redpacket.rs). Looking
    // for the senders locks nothing, so it travels with the claim.
    let packets_named: Vec<i64> = claims.iter().map(|&(_, packet)| packet).collect();
    let (id_claims, packet_senders) = futures_util::future::join(
        commands::claim_many(&tx, &unique_envelopes),
        redpacket::senders_named(&tx, &packets_named),
    )
    .await;
    let id_claims = id_claims?;
    users.extend(packet_senders?);
    let senders: Vec<(i64, CommandType)> = requests
        .iter()
        .map(|(_, r)| (r.from, r.kind.command()))
        .chain(
            hold_commands
                .iter()
                .filter(|(_, command)| command.makes_a_hold())
                .map(|(i, _)| (envelopes[*i].user_id, CommandType::HoldCreate)),
        )
        .chain(
            transforms
                .iter()
                .map(|(_, r)| (r.user, CommandType::Transform)),
        )
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
    for (&i, claim) in unique.iter().zip(id_claims) {
        match claim {
            Claim::New => claimed[i] = true,
            Claim::Done(applied) => {
                conflicted[i] = !applied.replayed;
                answers[i] = Some(applied);
            }
        }
    }
    requests.retain(|(i, _)| claimed[*i]);
    hold_commands.retain(|(i, _)| claimed[*i]);
    claims.retain(|(i, _)| claimed[*i]);
    transforms.retain(|(i, _)| claimed[*i]);
    others.retain(|&i| claimed[i]);
    let mut results: Vec<(usize, CommandResult)> = parse_rejections
        .into_iter()
        .filter(|(i, _)| claimed[*i])
        .map(|(i, rejection)| (i, rejected(&envelopes[i], rejection)))
        .collect();

    // Then the holds, packets and points accounts named, each in id order, after the wallets
    // of their owners: whoever else writes them holds those wallets too.
    let holds_closed: Vec<(i64, i64)> = hold_commands
        .iter()
        .filter_map(|(i, command)| command.closes(envelopes[*i].user_id))
        .collect();
    let claimed_by: Vec<(i64, i64)> = claims
        .iter()
        .map(|&(i, packet)| (packet, envelopes[i].user_id))
        .collect();
    let points_of: Vec<i64> = transforms.iter().map(|(_, r)| r.user).collect();
    // Different rows, locked in one round trip.
    let (locked_holds, packets, points) = futures_util::future::join3(
        async {
            if holds_closed.is_empty() {
                Ok(HashMap::new())
            } else {
                holds::lock_many(&tx, &holds_closed).await
            }
        },
        async {
            if claimed_by.is_empty() {
                Ok(None)
            } else {
                redpackets::lock_many(&tx, &packet_ids(&claimed_by))
                    .await
                    .map(Some)
            }
        },
        async {
            if points_of.is_empty() {
                Ok(HashMap::new())
            } else {
                lock_points(&tx, &points_of).await
            }
        },
    )
    .await;
    let (mut locked_holds, mut points) = (locked_holds?, points?);
    let mut packets = match packets? {
        Some(locked) => Some(redpacket::load(&tx, &claimed_by, locked, &mut wallets).await?),
        None => None,
    };

    let mut limits = Limits::load_with(&tx, &engine.policy, &senders, &own_limits).await?;
    // Each decided command's actor's wallet version as it leaves it: the journals are posted in
    // the order they are decided, so that is the version its entry gets.
    let mut versions: HashMap<usize, i64> = HashMap::new();
    let mut version_of = |i: usize, wallets: &BTreeMap<i64, LockedWallet>| {
        wallet_version(wallets, envelopes[i].user_id).map(|v| versions.insert(i, v))
    };
    let mut transfers = Vec::with_capacity(requests.len());
    for (i, request) in requests {
        match transfer::decide(request, &mut wallets, &mut limits)? {
            Ok(transfer) => {
                version_of(i, &wallets)?;
                transfers.push((i, transfer))
            }
            Err(rejection) => results.push((i, rejected(&envelopes[i], rejection))),
        }
    }
    let mut decided_holds = Vec::with_capacity(hold_commands.len());
    for (i, command) in hold_commands {
        let actor = envelopes[i].user_id;
        match hold::decide(command, actor, &mut wallets, &mut locked_holds, &mut limits)? {
            Ok(decided) => {
                version_of(i, &wallets)?;
                decided_holds.push((i, decided))
            }
            Err(rejection) => results.push((i, rejected(&envelopes[i], rejection))),
        }
    }
    let mut decided_claims = Vec::with_capacity(claims.len());
    if let Some(packets) = packets.as_mut() {
        for (i, packet) in claims {
            let claimer = envelopes[i].user_id;
            match redpacket::decide(packet, claimer, &mut wallets, packets)? {
                Ok(decided) => {
                    version_of(i, &wallets)?;
                    decided_claims.push((i, decided))
                }
                Err(rejection) => results.push((i, rejected(&envelopes[i], rejection))),
            }
        }
    }
    let mut decided_transforms = Vec::with_capacity(transforms.len());
    for (i, request) in transforms {
        match transform::decide(request, &mut wallets, &mut points, &mut limits)? {
            Ok(decided) => {
                version_of(i, &wallets)?;
                decided_transforms.push((i, decided))
            }
            Err(rejection) => results.push((i, rejected(&envelopes[i], rejection))),
        }
    }
    limits.record(&tx).await?;
    let mut system = SystemDeltas::default();
    let decided = Decided {
        transfers,
        holds: decided_holds,
        claims: decided_claims,
        transforms: decided_transforms,
    };
    if !decided.is_empty() {
        let written = decided.write(&tx, envelopes, &wallets, &mut system).await?;
        results.extend(
            written
                .into_iter()
                .map(|(i, result)| match versions.get(&i) {
                    Some(&version) => (i, with_version(result, version)),
                    None => (i, result),
                }),
        );
    }

    // Commands through a shared system account (the cash ones) go last, so that whatever
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

/// What a batch decided in memory, written together: every journal in one statement, the holds
/// and shares in one round trip, every order in one statement.
struct Decided {
    transfers: Vec<(usize, transfer::DecidedTransfer)>,
    holds: Vec<(usize, hold::DecidedHold)>,
    claims: Vec<(usize, redpacket::DecidedClaim)>,
    transforms: Vec<(usize, transform::DecidedTransform)>,
}

impl Decided {
    fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.holds.is_empty()
            && self.claims.is_empty()
            && self.transforms.is_empty()
    }

    async fn write(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
        envelopes: &[Envelope],
        wallets: &BTreeMap<i64, LockedWallet>,
        system: &mut SystemDeltas,
    ) -> Result<Vec<(usize, CommandResult)>, EngineError> {
        let new_accounts: Vec<AccountRef> = self
            .holds
            .iter()
            .filter_map(|(_, d)| d.account_to_make())
            .collect();
        ensure_user_accounts(tx, &new_accounts).await?;
        let draft = |i: usize, journal| JournalDraft {
            kind: envelopes[i].kind.as_str(),
            command_id: Some(envelopes[i].id.as_str()),
            journal,
        };
        let drafts: Vec<JournalDraft> = (self.transfers.iter())
            .map(|(i, t)| draft(*i, t.journal()))
            .chain(self.holds.iter().map(|(i, d)| draft(*i, d.journal())))
            .chain(self.claims.iter().map(|(i, c)| draft(*i, c.journal())))
            .chain(self.transforms.iter().map(|(i, t)| draft(*i, t.journal())))
            .collect();
        let journal_ids = post_journals(tx, &drafts, wallets, system).await?;
        let (transfer_journals, rest) = journal_ids.split_at(self.transfers.len());
        let (hold_journals, rest) = rest.split_at(self.holds.len());
        let (claim_journals, transform_journals) = rest.split_at(self.claims.len());

        let hold_items: Vec<(Option<&str>, &hold::DecidedHold, i64)> = (self.holds.iter())
            .zip(hold_journals)
            .map(|((i, d), &journal)| (Some(envelopes[*i].id.as_str()), d, journal))
            .collect();
        let share_items: Vec<(i64, &redpacket::DecidedClaim, i64)> = (self.claims.iter())
            .zip(claim_journals)
            .map(|((i, c), &journal)| (envelopes[*i].user_id, c, journal))
            .collect();
        let (hold_rows, shares) = futures_util::future::join(
            async {
                if hold_items.is_empty() {
                    Ok(Vec::new())
                } else {
                    hold::write_rows(tx, &hold_items).await
                }
            },
            redpacket::write_shares(tx, &share_items),
        )
        .await;
        let (hold_rows, shares) = (hold_rows?, shares?);

        // Every order, each command's own first, in one statement.
        let mut order_drafts: Vec<(usize, i64, Vec<OrderDraft>)> = Vec::new();
        for ((i, t), &journal) in self.transfers.iter().zip(transfer_journals) {
            order_drafts.push((*i, journal, t.orders()));
        }
        for (((i, d), &journal), (hold_id, _)) in
            self.holds.iter().zip(hold_journals).zip(&hold_rows)
        {
            order_drafts.push((*i, journal, d.orders(*hold_id)));
        }
        for ((i, c), &journal) in self.claims.iter().zip(claim_journals) {
            order_drafts.push((*i, journal, vec![c.order().clone()]));
        }
        for ((i, t), &journal) in self.transforms.iter().zip(transform_journals) {
            order_drafts.push((*i, journal, t.orders()));
        }
        let orders_of: Vec<(Option<&str>, Option<i64>, &OrderDraft)> = order_drafts
            .iter()
            .flat_map(|(i, journal, drafts)| {
                let command_id = Some(envelopes[*i].id.as_str());
                drafts.iter().map(move |d| (command_id, Some(*journal), d))
            })
            .collect();
        let orders = insert_orders_of(tx, &orders_of).await?;
        if orders.len() != orders_of.len() {
            return Err(EngineError::Broken("orders went missing".into()));
        }
        let mut orders_by_command = Vec::with_capacity(order_drafts.len());
        let mut rest: &[serde_json::Value] = &orders;
        for (_, _, drafts) in &order_drafts {
            let (own, later) = rest.split_at(drafts.len());
            orders_by_command.push(own);
            rest = later;
        }
        let mut orders_by_command = orders_by_command.into_iter();
        let mut next_orders = || {
            orders_by_command
                .next()
                .ok_or_else(|| EngineError::Broken("orders went missing".into()))
        };

        let mut results = Vec::with_capacity(order_drafts.len());
        for (i, t) in &self.transfers {
            results.push((*i, t.answer(&envelopes[*i], next_orders()?)));
        }
        for ((i, d), (_, hold_json)) in self.holds.iter().zip(hold_rows) {
            results.push((*i, d.answer(&envelopes[*i], hold_json, next_orders()?)));
        }
        for ((i, c), share) in self.claims.iter().zip(shares) {
            results.push((*i, c.answer(&envelopes[*i], share, &next_orders()?[0])));
        }
        for (i, t) in &self.transforms {
            results.push((*i, t.answer(&envelopes[*i], next_orders()?)));
        }
        Ok(results)
    }
}

fn packet_ids(claimed_by: &[(i64, i64)]) -> Vec<i64> {
    let mut ids: Vec<i64> = claimed_by.iter().map(|c| c.0).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub(super) fn touches_system_accounts(kind: CommandType) -> bool {
    matches!(
        kind,
        CommandType::Cash | CommandType::CashApprove | CommandType::CashReject
    )
}

/// The wallets a command decided on its own moves, locked with the batch's others: the acting
/// user's for a cash request and a red packet made.
fn wallets_named(envelope: &Envelope) -> Vec<i64> {
    match envelope.kind {
        CommandType::Cash | CommandType::RedpacketCreate => {
            vec![envelope.user_id]
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
