//! Ping++ webhook events, once their signature has been verified by the listener: what each
//! one asks of the ledger. Only charge events move money; any other type is recorded and
//! acknowledged, as Ping++ asks of receivers that don't act on it.

use serde_json::Value;

/// Larger bodies never pass the listener; the worker refuses them too.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// The longest event id or type taken (Ping++'s are `evt_` and 24 characters).
pub const MAX_EVENT_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct PingppEvent {
    pub id: String,
    pub kind: String,
    pub livemode: bool,
    /// `data.object`: a charge for charge events.
    pub object: Value,
}

/// The fields read off the top of an event, to refuse duplicates of them.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct TopFields<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventAction {
    /// Complete the recharge order of this charge by what the charge says.
    CompleteCharge(Value),
    /// Settle the cash record of this withdrawal by what the withdrawal says.
    CompleteWithdrawal(Value),
    /// Complete the recharge order of this deposit into a user's e-wallet.
    CompleteDeposit(Value),
    /// Record the decision on this personal account application (opened or refused).
    DecideApplication(Value),
    /// Record the decision on this sub-merchant's application (`mch_application` or
    /// `micro_application`).
    DecideMerchantApplication(Value),
    /// Complete the purchase of this Ping++ order.
    CompleteOrder(Value),
    /// Complete this refund of a purchase (an `order_refund`).
    CompleteRefund(Value),
    /// Complete this allocation, allocation refund or completion of a split purchase.
    CompleteAllocation(Value),
    /// Complete this refund of a recharge's charge (a `refund`; the money with the platform).
    CompleteRechargeRefund(Value),
    /// Nothing to do but remember it was received.
    Record,
}

/// The deposit events that complete a recharge order (the account system's events are named
/// `<object>.<outcome>` like Ping++'s others; the document names none).
pub const DEPOSIT_EVENTS: [&str; 3] = ["deposit.succeeded", "deposit.failed", "deposit.canceled"];

/// The application events that open an e-wallet or refuse it.
pub const APPLICATION_EVENTS: [&str; 2] = ["cus_application.succeeded", "cus_application.failed"];

/// The merchant application events that open a sub-merchant or refuse it.
pub const MERCHANT_APPLICATION_EVENTS: [&str; 4] = [
    "mch_application.succeeded",
    "mch_application.failed",
    "micro_application.succeeded",
    "micro_application.failed",
];

/// The withdrawal events that settle a cash record.
pub const WITHDRAWAL_EVENTS: [&str; 3] = [
    "withdrawal.succeeded",
    "withdrawal.failed",
    "withdrawal.canceled",
];

/// Reads a verified event: the listener refuses (400) what this refuses, and the worker reads
/// it with the same rules, so an event Ping++ was told it delivered is one the worker can read.
/// JSON nested deeper than serde_json's limit (128) is refused here too.
pub fn decode(body: &[u8]) -> Result<PingppEvent, String> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(format!("event of {} bytes is too large", body.len()));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("event is not JSON: {e}"))?;
    // A Value keeps the last of duplicate keys where another reader may take the first: an
    // event whose id, type or object is given twice means two things, and is refused.
    serde_json::from_slice::<TopFields>(body).map_err(|e| format!("not a Ping++ event: {e}"))?;
    let text = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| {
                !s.is_empty() && s.len() <= MAX_EVENT_ID_LEN && !s.chars().any(char::is_control)
            })
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "event has no {name} of 1 to {MAX_EVENT_ID_LEN} bytes without control characters"
                )
            })
    };
    if value.get("object").and_then(Value::as_str) != Some("event") {
        return Err("not an event object".into());
    }
    Ok(PingppEvent {
        id: text("id")?,
        kind: text("type")?,
        livemode: value.get("livemode").and_then(Value::as_bool) == Some(true),
        object: value
            .get("data")
            .and_then(|d| d.get("object"))
            .cloned()
            .unwrap_or(Value::Null),
    })
}

impl PingppEvent {
    pub fn action(&self) -> EventAction {
        let object = self.object.get("object").and_then(Value::as_str);
        if DEPOSIT_EVENTS.contains(&self.kind.as_str()) && object == Some("deposit") {
            return EventAction::CompleteDeposit(self.object.clone());
        }
        if APPLICATION_EVENTS.contains(&self.kind.as_str()) && object == Some("cus_application") {
            return EventAction::DecideApplication(self.object.clone());
        }
        if matches!(self.kind.as_str(), "order.succeeded" | "order.canceled")
            && object == Some("order")
        {
            return EventAction::CompleteOrder(self.object.clone());
        }
        if matches!(self.kind.as_str(), "refund.succeeded" | "refund.failed")
            && object == Some("order_refund")
        {
            return EventAction::CompleteRefund(self.object.clone());
        }
        // Ping++ documents only `refund.succeeded`, whose refund may say `failed`;
        // `refund.failed` is taken too, should it come.
        if matches!(self.kind.as_str(), "refund.succeeded" | "refund.failed")
            && object == Some("refund")
        {
            return EventAction::CompleteRechargeRefund(self.object.clone());
        }
        if matches!(
            (self.kind.as_str(), object),
            (
                "allocation.succeeded" | "allocation.failed",
                Some("allocation")
            ) | (
                "allocation_complete.succeeded" | "allocation_complete.failed",
                Some("allocation_complete")
            )
        ) {
            return EventAction::CompleteAllocation(self.object.clone());
        }
        if MERCHANT_APPLICATION_EVENTS.contains(&self.kind.as_str())
            && matches!(object, Some("mch_application" | "micro_application"))
        {
            return EventAction::DecideMerchantApplication(self.object.clone());
        }
        if let Some(withdrawal) = self.withdrawal() {
            return if WITHDRAWAL_EVENTS.contains(&self.kind.as_str()) {
                EventAction::CompleteWithdrawal(withdrawal.clone())
            } else {
                EventAction::Record
            };
        }
        match (self.kind.as_str(), self.charge()) {
            ("charge.succeeded" | "charge.failed", Some(charge)) if self.recharge().is_none() => {
                EventAction::CompleteCharge(charge.clone())
            }
            // A recharge object's charge completes its order like a plain charge.
            ("recharge.succeeded", Some(charge)) if self.recharge().is_some() => {
                EventAction::CompleteCharge(charge.clone())
            }
            _ => EventAction::Record,
        }
    }

    /// `data.object` when it is a withdrawal.
    pub fn withdrawal(&self) -> Option<&Value> {
        (self.object.get("object").and_then(Value::as_str) == Some("withdrawal"))
            .then_some(&self.object)
    }

    /// `data.object` when it is a recharge object.
    pub fn recharge(&self) -> Option<&Value> {
        (self.object.get("object").and_then(Value::as_str) == Some("recharge"))
            .then_some(&self.object)
    }

    /// The charge of the event: `data.object` itself, or a recharge object's `charge`.
    pub fn charge(&self) -> Option<&Value> {
        let charge = match self.recharge() {
            Some(recharge) => recharge.get("charge")?,
            None => &self.object,
        };
        (charge.get("object").and_then(Value::as_str) == Some("charge")).then_some(charge)
    }

    /// The charge id of a charge or recharge event, to find its order.
    pub fn charge_id(&self) -> Option<&str> {
        self.charge()?.get("id").and_then(Value::as_str)
    }

    pub fn order_no(&self) -> Option<&str> {
        self.charge()?.get("order_no").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        include_str!("../../tests/fixtures/pingpp-webhook/event-charge-succeeded.json");

    #[test]
    fn the_real_fixture_is_a_charge_to_complete() {
        let event = decode(FIXTURE.as_bytes()).unwrap();
        assert_eq!(event.kind, "charge.succeeded");
        assert!(event.id.starts_with("evt_"));
        assert!(matches!(event.action(), EventAction::CompleteCharge(_)));
        assert!(event.charge_id().unwrap().starts_with("ch_"));
    }

    #[test]
    fn other_events_are_recorded_and_garbage_refused() {
        let summary = r#"{"id":"evt_1","object":"event","type":"summary.daily.available","data":{"object":{}}}"#;
        assert_eq!(
            decode(summary.as_bytes()).unwrap().action(),
            EventAction::Record
        );
        let not_a_charge = r#"{"id":"evt_2","object":"event","type":"charge.succeeded","data":{"object":{"object":"refund"}}}"#;
        assert_eq!(
            decode(not_a_charge.as_bytes()).unwrap().action(),
            EventAction::Record
        );
        let recharge = r#"{"id":"evt_3","object":"event","type":"recharge.succeeded","data":{"object":{"id":"220","object":"recharge","charge":{"id":"ch_1","object":"charge","order_no":"a1"}}}}"#;
        let event = decode(recharge.as_bytes()).unwrap();
        assert!(matches!(event.action(), EventAction::CompleteCharge(_)));
        assert_eq!(
            (event.charge_id(), event.order_no()),
            (Some("ch_1"), Some("a1"))
        );
        let no_charge = r#"{"id":"evt_4","object":"event","type":"recharge.succeeded","data":{"object":{"id":"220","object":"recharge"}}}"#;
        assert_eq!(
            decode(no_charge.as_bytes()).unwrap().action(),
            EventAction::Record
        );
        let withdrawal = r#"{"id":"evt_5","object":"event","type":"withdrawal.failed","data":{"object":{"id":"1712","object":"withdrawal","order_no":"w1","status":"failed"}}}"#;
        assert!(matches!(
            decode(withdrawal.as_bytes()).unwrap().action(),
            EventAction::CompleteWithdrawal(_)
        ));
        let deposit = r#"{"id":"evt_6","object":"event","type":"deposit.succeeded","data":{"object":{"id":"601","object":"deposit"}}}"#;
        assert!(matches!(
            decode(deposit.as_bytes()).unwrap().action(),
            EventAction::CompleteDeposit(_)
        ));
        let opened = r#"{"id":"evt_7","object":"event","type":"cus_application.succeeded","data":{"object":{"id":"111","object":"cus_application"}}}"#;
        assert!(matches!(
            decode(opened.as_bytes()).unwrap().action(),
            EventAction::DecideApplication(_)
        ));
        let refund = r#"{"id":"evt_8","object":"event","type":"refund.succeeded","data":{"object":{"id":"re_1","object":"refund","charge":"ch_1"}}}"#;
        assert!(matches!(
            decode(refund.as_bytes()).unwrap().action(),
            EventAction::CompleteRechargeRefund(_)
        ));
        let order_refund = refund.replace(r#""object":"refund""#, r#""object":"order_refund""#);
        assert!(matches!(
            decode(order_refund.as_bytes()).unwrap().action(),
            EventAction::CompleteRefund(_)
        ));
        let pending = withdrawal.replace("withdrawal.failed", "withdrawal.pending");
        assert_eq!(
            decode(pending.as_bytes()).unwrap().action(),
            EventAction::Record
        );
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"id":"e","object":"event"}"#,
            r#"{"id":5,"type":"x","object":"event"}"#,
            r#"{"id":"evt\u0000","type":"x","object":"event"}"#,
            r#"{"id":"evt_1","type":"x\u0000","object":"event"}"#,
            r#"{"id":"evt_1","id":"evt_2","type":"x","object":"event"}"#,
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let long_id = format!(
            r#"{{"id":"{}","type":"x","object":"event"}}"#,
            "e".repeat(129)
        );
        assert!(decode(long_id.as_bytes()).is_err());
        let deep = format!(
            r#"{{"id":"evt_1","type":"x","object":"event","data":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(decode(deep.as_bytes()).is_err());
    }
}
