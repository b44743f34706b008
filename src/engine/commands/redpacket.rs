//! `redpacket.create`, `redpacket.claim` and `redpacket.get` (in the batch's transaction), and
//! the expiry of open packets whose time has come (`expire_due`, run by the worker's sweeper).
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

use deadpool_postgres::Transaction;
use serde_json::json;

use super::{post_one, set_aside};
use crate::db::ledger::{insert_orders, lock_wallets, SystemDeltas};
use crate::db::{outbox, redpackets};
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::AccountRef;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::domain::redpacket::{self, PacketStatus};
use crate::engine::{succeeded, Engine};
use crate::error::EngineError;

type Decided = Result<Result<CommandResult, Rejection>, EngineError>;

/// The senders of the packets that a batch's claims name: their wallets are locked with the
/// batch's others, before anything is decided.
pub(crate) async fn senders_named<'e>(
    tx: &Transaction<'_>,
    envelopes: impl Iterator<Item = &'e Envelope>,
) -> Result<Vec<i64>, EngineError> {
    let packets: Vec<i64> = envelopes
        .filter(|e| e.kind == CommandType::RedpacketClaim)
        .filter_map(|e| redpacket::packet_named(&e.data))
        .collect();
    if packets.is_empty() {
        return Ok(Vec::new());
    }
    redpackets::senders(tx, &packets).await
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
    let into = (AccountRef::Packets(request.user), request.total);
    let decided = set_aside(tx, envelope, policy, into, |figures| {
        redpacket::decide_create(&request, figures)
    })
    .await?;
    let journal_id = match decided {
        Ok(journal_id) => journal_id,
        Err(rejection) => return Ok(Err(rejection)),
    };
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
    Ok(Ok(succeeded(
        envelope,
        Some(redpacket::MSG_CREATED),
        json!({ "redpacket": redpackets::json(tx, packet_id).await?, "order": order }),
    )))
}

/// A seed for a random split from the operating system: upstream can't choose the shares.
fn random_seed() -> Result<u64, EngineError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| EngineError::Broken("no randomness from the operating system".into()))?;
    Ok(u64::from_le_bytes(bytes))
}

pub(crate) async fn claim(tx: &Transaction<'_>, envelope: &Envelope) -> Decided {
    let packet_id = match redpacket::parse_packet(&envelope.data) {
        Ok(id) => id,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let claimer = envelope.user_id;
    // Both wallets are locked already (module docs); this reads their figures.
    let mut users = redpackets::senders(tx, &[packet_id]).await?;
    users.push(claimer);
    let wallets = lock_wallets(tx, &users).await?;
    let locked = redpackets::lock(tx, packet_id).await?;
    let (already_claimed, next_amount) = match &locked {
        Some(packet) => {
            redpackets::claim_lookup(tx, packet_id, claimer, packet.claimed + 1).await?
        }
        None => (false, None),
    };
    let number = match redpacket::next_share_for(locked.as_ref(), claimer, already_claimed) {
        Ok(number) => number,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let packet = locked.expect("a share only of a packet that exists");
    let amount = next_amount.ok_or_else(|| {
        EngineError::Broken(format!("red packet {packet_id} lacks share {number}"))
    })?;
    let figures = wallets
        .get(&claimer)
        .map_or_else(Default::default, |w| w.figures);
    let claim = match redpacket::claim(&packet, claimer, number, amount, figures) {
        Ok(claim) => claim,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let mut system = SystemDeltas::default();
    let journal_id = post_one(
        tx,
        envelope.kind.as_str(),
        &envelope.id,
        &claim.journal,
        &wallets,
        &mut system,
    )
    .await?;
    let order = insert_orders(tx, Some(&envelope.id), Some(journal_id), &[claim.order])
        .await?
        .remove(0);
    let share = redpackets::record_claim(tx, packet_id, number, claimer, journal_id).await?;
    Ok(Ok(succeeded(
        envelope,
        Some(redpacket::MSG_CLAIMED),
        json!({ "share": share, "order": order }),
    )))
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
