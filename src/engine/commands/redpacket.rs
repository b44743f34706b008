//! `redpacket.create` and `redpacket.get` (in the batch's transaction), `redpacket.claim`
//! (decided in memory with the batch's transfers and written with them: `load`, `decide`,
//! then src/engine/batch.rs), and the expiry of open packets whose time has come (`expire_due`, run by the
//! worker's sweeper).
//!
//! Lock order. Everything of a sender's packets (the packet rows, their shares and the sender's
//! `packets` account) is written only by transactions that hold the sender's wallet: a create
//! is the sender's own command, a claim locks the sender's wallet beside the claimer's, and the
//! sweeper locks the senders' wallets before their packets. Wallets are locked up front, in user
//! order, by the batch (`wallets_named` and [`senders_named`] in src/engine/batch.rs) and by the
//! sweeper, and nothing is locked before them that another transaction takes after them. So two
//! transactions that meet on a packet or a `packets` account have met on the sender's wallet
//! first, in the one global order, and the second simply waits: no cycle can form, whether the
//! claims of a batch name one packet or many, and whoever comes second (a claim after the
//! expiry, a second sweeper) finds the packet as the first left it. The one exception is a claim
//! naming a packet that did not exist when its batch locked its wallets (a guessed id, created
//! meanwhile): it then locks the sender's wallet late, and in the worst case PostgreSQL reports
//! a deadlock, which is transient: the batch is applied again one command at a time.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use super::{post_one, track, wallet_version, with_version};
use crate::db::ledger::{
    ensure_user_accounts, insert_orders, lock_wallets, LockedWallet, SystemDeltas,
};
use crate::db::{outbox, redpackets};
use crate::domain::command::Envelope;
use crate::domain::ledger::{AccountRef, Journal};
use crate::domain::order::OrderDraft;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::domain::redpacket::{self, LockedPacket, PacketStatus};
use crate::engine::limits::decide_sending;
use crate::engine::{succeeded, Engine};
use crate::error::EngineError;

type Decided = Result<Result<CommandResult, Rejection>, EngineError>;

/// The senders of the packets that a batch's claims name (those that exist): their wallets are
/// locked with the batch's others, before anything is decided.
pub(crate) async fn senders_named(
    tx: &Transaction<'_>,
    packets: &[i64],
) -> Result<Vec<i64>, EngineError> {
    if packets.is_empty() {
        return Ok(Vec::new());
    }
    redpackets::senders(tx, packets).await
}

pub(crate) async fn create(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
) -> Decided {
    let request = match redpacket::parse_create(envelope.user_id, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    // The total goes from the wallet, under its lock, the day's limit and a freeze, into the
    // sender's `packets` account.
    let sending = (envelope.kind, envelope.user_id, request.total);
    let decided = decide_sending(tx, policy, sending, |figures| {
        redpacket::decide_create(&request, figures)
    })
    .await?;
    let (wallets, journal) = match decided {
        Ok(decided) => decided,
        Err(rejection) => return Ok(Err(rejection)),
    };
    ensure_user_accounts(tx, &[AccountRef::Packets(request.user)]).await?;
    let mut system = SystemDeltas::default();
    let kind = envelope.kind.as_str();
    let journal_id = post_one(tx, kind, &envelope.id, &journal, &wallets, &mut system).await?;
    let mut after = wallets;
    track(&mut after, &journal)?;
    let version = wallet_version(&after, request.user)?;
    let shares = redpacket::shares(&request, random_seed()?);
    let packet_id = redpackets::insert(tx, &request, &shares, &envelope.id, journal_id).await?;
    let order = insert_orders(
        tx,
        Some(&envelope.id),
        Some(journal_id),
        &[redpacket::create_order(&request, packet_id)],
    )
    .await?
    .remove(0);
    Ok(Ok(with_version(
        succeeded(
            envelope,
            Some(redpacket::MSG_CREATED),
            json!({ "redpacket": redpackets::json(tx, packet_id).await?, "order": order }),
        ),
        version,
    )))
}

/// A seed for a random split from the operating system: upstream can't choose the shares.
fn random_seed() -> Result<u64, EngineError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| EngineError::Broken("no randomness from the operating system".into()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// What a batch's claims are decided against: the packets they name (locked, by id), which
/// claimers hold a share of which already, and the amounts of the shares they may take next.
pub(crate) struct Packets {
    locked: HashMap<i64, LockedPacket>,
    holders: HashSet<(i64, i64)>,
    amounts: HashMap<(i64, i32), i64>,
}

/// What deciding a batch's claims, each `(packet, claimer)`, needs, with their packets `locked`
/// (`redpackets::lock_many`). Their senders' wallets are locked already (module docs), but for
/// a packet made after the batch looked for them: its sender's wallet is locked now.
pub(crate) async fn load(
    tx: &Transaction<'_>,
    claims: &[(i64, i64)],
    locked: HashMap<i64, LockedPacket>,
    wallets: &mut BTreeMap<i64, LockedWallet>,
) -> Result<Packets, EngineError> {
    let late: Vec<i64> = locked
        .values()
        .map(|p| p.user)
        .filter(|sender| !wallets.contains_key(sender))
        .collect();
    if !late.is_empty() {
        wallets.extend(lock_wallets(tx, &late).await?);
    }
    let mut wanted: HashMap<i64, i32> = HashMap::new();
    for (packet, _) in claims {
        *wanted.entry(*packet).or_default() += 1;
    }
    let next: Vec<(i64, i32, i32)> = locked
        .values()
        .map(|p| (p.id, p.claimed, wanted[&p.id]))
        .collect();
    let mut claimers: Vec<i64> = claims.iter().map(|c| c.1).collect();
    claimers.sort_unstable();
    claimers.dedup();
    let (holders, amounts) = if next.is_empty() {
        Default::default()
    } else {
        redpackets::claims_lookup(tx, &claimers, &next).await?
    };
    Ok(Packets {
        locked,
        holders,
        amounts,
    })
}

/// A claim decided and not yet written.
pub(crate) struct DecidedClaim {
    packet: i64,
    claim: redpacket::Claim,
}

/// Decides one claim against the packets and wallets as the batch's earlier claims left them,
/// and moves those in memory when it goes through.
pub(crate) fn decide(
    packet_id: i64,
    claimer: i64,
    wallets: &mut BTreeMap<i64, LockedWallet>,
    packets: &mut Packets,
) -> Result<Result<DecidedClaim, Rejection>, EngineError> {
    let already_claimed = packets.holders.contains(&(packet_id, claimer));
    let locked = packets.locked.get_mut(&packet_id);
    let number = match redpacket::next_share_for(locked.as_deref(), claimer, already_claimed) {
        Ok(number) => number,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let packet = locked.ok_or_else(|| EngineError::Broken("a share of no packet".into()))?;
    let amount = *packets.amounts.get(&(packet_id, number)).ok_or_else(|| {
        EngineError::Broken(format!("red packet {packet_id} lacks share {number}"))
    })?;
    let figures = wallets
        .get(&claimer)
        .map_or_else(Default::default, |w| w.figures);
    let claim = match redpacket::claim(packet, claimer, number, amount, figures) {
        Ok(claim) => claim,
        Err(rejection) => return Ok(Err(rejection)),
    };
    track(wallets, &claim.journal)?;
    packet.claimed = number;
    packet.claimed_amount += amount;
    if packet.claimed == packet.count {
        packet.status = PacketStatus::Finished;
    }
    packets.holders.insert((packet_id, claimer));
    Ok(Ok(DecidedClaim {
        packet: packet_id,
        claim,
    }))
}

impl DecidedClaim {
    pub(crate) fn journal(&self) -> &Journal {
        &self.claim.journal
    }

    pub(crate) fn order(&self) -> &OrderDraft {
        &self.claim.order
    }

    /// The command's result, with its share as written and its order.
    pub(crate) fn answer(&self, envelope: &Envelope, share: Value, order: &Value) -> CommandResult {
        let data = json!({ "share": share, "order": order });
        succeeded(envelope, Some(redpacket::MSG_CLAIMED), data)
    }
}

/// Gives the decided claims' shares to their claimers, each `(claimer, decision, its posted
/// journal)`; returns the shares' JSON, in the order given.
pub(crate) async fn write_shares(
    tx: &Transaction<'_>,
    items: &[(i64, &DecidedClaim, i64)],
) -> Result<Vec<Value>, EngineError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let shares: Vec<(i64, i32, i64, i64)> = items
        .iter()
        .map(|&(claimer, d, journal)| (d.packet, d.claim.number, claimer, journal))
        .collect();
    redpackets::record_claims(tx, &shares).await
}

/// The packet and who claimed what, for its sender and whoever may claim it; a read, so
/// answered without a message.
pub(crate) async fn get(tx: &Transaction<'_>, envelope: &Envelope) -> Decided {
    let packet_id = match redpacket::parse_packet(&envelope.data) {
        Ok(id) => id,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let refuse = |code, message| Ok(Err(Rejection::field(code, "redpacket", message)));
    match redpackets::read(tx, packet_id).await? {
        None => return refuse(Code::RedpacketNotFound, redpacket::MSG_NOT_FOUND),
        Some(packet) if !packet.visible_to(envelope.user_id) => {
            return refuse(Code::NotAllowed, redpacket::MSG_NOT_SHOWN)
        }
        Some(_) => {}
    }
    let (packet, claims) = redpackets::json_with_claims(tx, packet_id).await?;
    Ok(Ok(succeeded(
        envelope,
        None,
        json!({ "redpacket": packet, "claims": claims }),
    )))
}

/// Most packets expired in one transaction: few, so that the owners' wallets it locks are
/// held for a few milliseconds (the sweeper goes on at once after a full one).
const EXPIRE_AT_ONCE: i64 = 10;

/// Gives back what open packets whose expiry has come still hold, each exactly once (one
/// finished or expired meanwhile is left as it is), and writes a `redpacket.expired` event for
/// each to the outbox. Returns how many expired.
pub(crate) async fn expire_due(engine: &Engine) -> Result<usize, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let due = redpackets::due(&tx, EXPIRE_AT_ONCE).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let senders: Vec<i64> = due.iter().map(|&(_, sender)| sender).collect();
    let wallets = lock_wallets(&tx, &senders).await?;
    let mut expired = 0;
    for (id, _) in due {
        let Some(packet) = redpackets::lock(&tx, id).await? else {
            continue;
        };
        if packet.status != PacketStatus::Open {
            continue;
        }
        let refund = redpacket::refund(&packet)
            .ok_or_else(|| EngineError::Broken(format!("open red packet {id} has nothing left")))?;
        let mut system = SystemDeltas::default();
        let journal_id = crate::db::ledger::post_journals(
            &tx,
            &[crate::db::ledger::JournalDraft {
                kind: "redpacket.expire",
                command_id: None,
                journal: &refund.journal,
            }],
            &wallets,
            &mut system,
        )
        .await?[0];
        let order = insert_orders(&tx, None, Some(journal_id), &[refund.order])
            .await?
            .remove(0);
        redpackets::record_refund(&tx, id, refund.amount, journal_id).await?;
        outbox::enqueue(
            &tx,
            "redpacket.expired",
            &json!({
                "type": "redpacket.expired",
                "event_id": format!("redpacket.expired.{id}"),
                "user_id": packet.user,
                "data": { "redpacket": redpackets::json(&tx, id).await?, "order": order },
            }),
        )
        .await?;
        expired += 1;
    }
    tx.commit().await?;
    Ok(expired)
}
