//! A command message body as the worker takes it off the queue: decoded into an envelope,
//! fingerprinted, checked for text PostgreSQL cannot store, then its `data` read by the rules
//! of its type under either custody. Everything up to the database.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use pluspay::domain::cash::{self, Decision};
use pluspay::domain::command::{decode, valid_id, CommandType, Envelope};
use pluspay::domain::custody::Custody;
use pluspay::domain::policy::WalletPolicy;
use pluspay::domain::transfer::TransferKind;
use pluspay::domain::{
    account, allocation, deposit, history, hold, limits, merchant, purchase, query, recharge,
    recharge_object, redpacket, refund, transfer, transform, validate,
};

/// A fixed clock: parsing must not depend on when the fuzzer runs.
const NOW: i64 = 1_700_000_000;

fuzz_target!(|body: &[u8]| {
    let Ok(envelope) = decode(body) else {
        return;
    };
    assert!(valid_id(&envelope.id));
    assert!(envelope.user_id > 0);
    assert!(body.len() <= envelope.kind.max_message_bytes());
    reencoded_is_the_same(&envelope);

    if validate::unstorable_text(&envelope.data).is_some() {
        return;
    }
    for custody in [Custody::Platform, Custody::Pingpp] {
        if custody.offers(envelope.kind) {
            let policy = WalletPolicy {
                custody,
                ..WalletPolicy::default()
            };
            read_data(&envelope, &policy);
        }
    }
});

/// The fingerprint promises that the same command re-serialized by another publisher matches.
fn reencoded_is_the_same(envelope: &Envelope) {
    let again = json!({
        "id": envelope.id,
        "type": envelope.kind.as_str(),
        "user_id": envelope.user_id,
        "data": envelope.data,
    });
    let decoded = decode(again.to_string().as_bytes()).expect("a re-encoded command decodes");
    // serde_json does not promise to read back every float it writes bit for bit.
    if !envelope.data.values().any(has_float) {
        assert_eq!(&decoded, envelope);
        assert_eq!(decoded.fingerprint(), envelope.fingerprint());
    }
}

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(fields) => fields.values().any(has_float),
        _ => false,
    }
}

/// What the engine's dispatch reads of `data` before it asks the database anything; every
/// amount it accepts is positive.
fn read_data(envelope: &Envelope, policy: &WalletPolicy) {
    let data = &envelope.data;
    let user = envelope.user_id;
    let at_pingpp = policy.custody == Custody::Pingpp;
    match envelope.kind {
        // A reward is a transfer on the platform, a Ping++ order when the money is there.
        CommandType::Reward if at_pingpp => {
            if let Ok((r, _)) = purchase::parse_reward(user, data) {
                assert!(r.amount > 0, "{r:?}");
            }
        }
        CommandType::Transfer | CommandType::Reward => {
            let kind = if envelope.kind == CommandType::Transfer {
                TransferKind::Transfer
            } else {
                TransferKind::Reward
            };
            if let Ok(r) = transfer::parse(kind, user, data) {
                assert!(r.amount > 0, "{r:?}");
                assert_eq!(r.from, user);
            }
        }
        CommandType::Transform => {
            if let Ok(r) = transform::parse(user, data, policy) {
                assert!(r.amount >= policy.transform_min && r.points >= 0, "{r:?}");
            }
        }
        CommandType::Cash if at_pingpp => {
            if let Ok(r) = cash::parse_ewallet_request(user, data, policy) {
                assert!(r.value > 0, "{r:?}");
            }
        }
        CommandType::Cash => {
            if let Ok(r) = cash::parse_request(user, data, policy) {
                assert!(r.value >= policy.cash_min && r.value > 0, "{r:?}");
            }
        }
        CommandType::CashApprove => {
            let _ = cash::parse_decision(Decision::Approve, data);
        }
        CommandType::CashReject => {
            let _ = cash::parse_decision(Decision::Reject, data);
        }
        CommandType::CashRetrieve => {
            let _ = cash::parse_cash_id(data);
        }
        CommandType::Recharge if at_pingpp => {
            if let Ok(r) = deposit::parse(user, data, policy) {
                assert!(r.amount > 0, "{r:?}");
            }
        }
        CommandType::Recharge => {
            if let Ok(r) = recharge::parse(user, data, policy) {
                assert!(
                    (policy.recharge_min..=policy.recharge_max).contains(&r.amount),
                    "{r:?}"
                );
            }
            if let Ok((r, _)) = recharge_object::parse(user, data, policy, NOW) {
                assert!(r.amount > 0, "{r:?}");
            }
        }
        CommandType::RechargeRetrieve
        | CommandType::OrdersGet
        | CommandType::OrderGet
        | CommandType::OrderRefunds
        | CommandType::OrderRefundGet => {
            let _ = query::order_id(data);
        }
        CommandType::OrdersList => {
            let _ = query::orders_page(data);
        }
        CommandType::CashesList => {
            let _ = query::cashes_page(data);
        }
        CommandType::ChargesList => {
            let _ = query::charges_page(data);
        }
        CommandType::ChargesGet => {
            let _ = query::charge_id(data);
        }
        CommandType::WalletGet => {
            if let Ok(Some(at)) = history::wallet_at(data) {
                assert_eq!(at.as_str().len(), 19);
            }
        }
        CommandType::WalletStatement => {
            if let Ok(period) = history::statement_period(data) {
                assert!(period.from < period.to);
            }
        }
        CommandType::WalletChanges => {
            if let Ok(page) = query::changes_page(data) {
                assert!(page.since >= 0 && (1..=query::MAX_LIMIT).contains(&page.limit));
            }
        }
        CommandType::WalletProof => {
            if let Ok(day) = query::proof_day(data) {
                assert!(day.len() == 10 && day.is_ascii());
            }
        }
        CommandType::AccountOpen => {
            let _ = account::parse_open(data);
        }
        CommandType::AccountGet => {}
        CommandType::AccountCards => {
            let _ = account::parse_return_url(data);
        }
        CommandType::UploadPic => {
            let _ = account::parse_pic(data, policy.pic_max_bytes);
        }
        CommandType::CardBin => {
            let _ = account::parse_card_number(data);
        }
        CommandType::MerchantCreate => {
            let _ = merchant::parse_create(data);
        }
        CommandType::MerchantGet | CommandType::MerchantApplicationGet => {}
        CommandType::MerchantApply => {
            let _ = merchant::parse_apply(data);
        }
        CommandType::MerchantSettleAccount => {
            for kind in [merchant::Kind::Enterprise, merchant::Kind::Micro] {
                let _ = merchant::parse_settle_account(data, kind);
            }
        }
        CommandType::OrderCreate => {
            if let Ok(r) = purchase::parse_create(user, data, NOW) {
                assert!(r.amount > 0, "{r:?}");
            }
        }
        CommandType::OrderPay => {
            if let Ok(r) = purchase::parse_pay(data) {
                assert!(r.charge_amount.is_none_or(|a| a >= 0), "{r:?}");
            }
        }
        CommandType::OrderRefund => {
            if let Ok(r) = purchase::parse_refund(data) {
                assert!(r.amount > 0, "{r:?}");
            }
        }
        CommandType::AllocationCreate => {
            if let Ok((_, shares)) = allocation::parse_create(data) {
                assert!(shares.iter().all(|s| s.amount > 0));
                assert!(allocation::Share::total(&shares) > 0);
            }
        }
        CommandType::AllocationRefund => {
            if let Ok((_, shares)) = allocation::parse_refund(data) {
                assert!(shares.iter().all(|s| s.amount > 0));
                assert!(allocation::Share::total(&shares) > 0);
            }
        }
        CommandType::AllocationComplete => {
            let _ = allocation::parse_complete(data);
        }
        CommandType::AllocationGet => {}
        CommandType::HoldCreate => {
            if let Ok(r) = hold::parse_create(user, data) {
                assert!(r.amount > 0 && r.expires_in > 0, "{r:?}");
            }
        }
        CommandType::HoldCapture => {
            if let Ok(r) = hold::parse_capture(user, data) {
                assert!(r.amount > 0 && r.receiver != user, "{r:?}");
            }
        }
        CommandType::HoldRelease => {
            let _ = hold::parse_release(data);
        }
        CommandType::RedpacketCreate => {
            if let Ok(r) = redpacket::parse_create(user, data) {
                assert!(r.count > 0 && r.total >= i64::from(r.count), "{r:?}");
            }
        }
        CommandType::RedpacketClaim | CommandType::RedpacketGet => {
            let _ = redpacket::parse_packet(data);
        }
        CommandType::RechargeRefund => {
            if let Ok(r) = refund::parse(data) {
                assert!(r.amount > 0, "{r:?}");
            }
        }
        CommandType::WalletFreeze | CommandType::WalletUnfreeze => {
            let _ = limits::parse_freeze(data);
        }
        CommandType::LimitsSet => {
            let _ = limits::parse_limits(data);
        }
    }
}
