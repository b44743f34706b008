//! Purchases with the money at Ping++ (消费订单): a buyer's Ping++ order to a seller's
//! sub-merchant, paid from the buyer's e-wallet (`balance`) or a channel, and its refunds. Each
//! is one balanced journal when Ping++ confirms it, with the seed-format orders (钱包流水) for
//! buyer and seller.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, SystemAccount};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{int_field, text_field, IntField, TextField, MSG_BAD_DATA};

pub const TARGET_TYPE: &str = "pingpp_order";
pub const REFUND_TARGET_TYPE: &str = "pingpp_refund";
pub const TITLE: &str = "消费";
pub const REFUND_TITLE: &str = "退款";
pub const MSG_SELLER: &str = "请选择正确的收款用户";
pub const MSG_AMOUNT: &str = "订单金额不合法";
pub const MSG_SUBJECT: &str = "商品标题须为 1 到 32 个字符";
pub const MSG_BODY: &str = "商品描述须为 1 到 128 个字符";
pub const MSG_CLIENT_IP: &str = "请输入正确的客户端 IP";
pub const MSG_TIME_EXPIRE: &str = "订单过期时间须在 1 分钟到 7 天之间";
pub const MSG_CHANNEL: &str = "不支持的支付渠道";
pub const MSG_CHARGE_AMOUNT: &str = "支付金额须为订单金额";
pub const MSG_RETURN_URL: &str = "余额支付须提供 extra.return_url";
pub const MSG_NOT_PAYABLE: &str = "订单不可支付";
pub const MSG_NOT_PAID: &str = "订单未支付";
pub const MSG_REFUND_TOO_LARGE: &str = "退款金额超出可退金额";
pub const MSG_DESCRIPTION: &str = "请输入退款描述";
pub const MSG_CREATED: &str = "订单创建成功";
pub const MSG_REFUND_CREATED: &str = "退款申请已提交";
pub const MSG_UNKNOWN_REFUND: &str = "退款不存在";

/// The largest order Ping++ takes, in fen.
pub const MAX_ORDER_AMOUNT: i64 = 1_000_000_000;
pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// The channels an order may be paid through (消费订单支付).
pub const CHANNELS: &[&str] = &[
    "balance",
    "yeepay_alipay_lite",
    "yeepay_alipay_pub",
    "yeepay_alipay_qr",
    "yeepay_alipay_scan",
    "yeepay_upacp_qr",
    "yeepay_upacp_scan",
    "yeepay_wx_lite",
    "yeepay_wx_lite_ofl",
    "yeepay_wx_pub",
    "yeepay_wx_pub_ofl",
    "yeepay_wx_pub_qr",
    "yeepay_wx_pub_scan",
    "yeepay_wx_pub_scan_ofl",
];

/// `order.create`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseRequest {
    pub buyer: i64,
    pub seller: i64,
    pub amount: i64,
    pub subject: String,
    pub body: String,
    pub client_ip: String,
    pub time_expire: Option<i64>,
    pub description: Option<String>,
    pub metadata: Option<Value>,
    /// A split order: its payment waits for allocations and their completion.
    pub allocation: bool,
}

fn text_within(
    data: &Map<String, Value>,
    name: &str,
    max: usize,
    errors: &mut FieldErrors,
    code: Code,
    message: &str,
) -> String {
    match text_field(data, name) {
        TextField::Value(v) if v.chars().count() <= max => v,
        _ => {
            errors.add(code, name, message);
            String::new()
        }
    }
}

/// `now` (unix s) bounds `time_expire`.
pub fn parse_create(
    buyer: i64,
    data: &Map<String, Value>,
    now: i64,
) -> Result<PurchaseRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let seller = match int_field(data, "seller") {
        IntField::Value(v) if v > 0 && v != buyer => v,
        _ => {
            errors.add(Code::InvalidUser, "seller", MSG_SELLER);
            0
        }
    };
    let amount = match int_field(data, "amount") {
        IntField::Value(v) if (1..=MAX_ORDER_AMOUNT).contains(&v) => v,
        IntField::Missing => {
            errors.add(Code::AmountRequired, "amount", MSG_AMOUNT);
            0
        }
        _ => {
            errors.add(Code::InvalidAmount, "amount", MSG_AMOUNT);
            0
        }
    };
    let subject = text_within(
        data,
        "subject",
        32,
        &mut errors,
        Code::InvalidBody,
        MSG_SUBJECT,
    );
    let body = text_within(data, "body", 128, &mut errors, Code::InvalidBody, MSG_BODY);
    let client_ip = match text_field(data, "client_ip") {
        TextField::Value(ip) if ip.parse::<IpAddr>().is_ok() => ip,
        _ => {
            errors.add(Code::InvalidClientIp, "client_ip", MSG_CLIENT_IP);
            String::new()
        }
    };
    let time_expire = match int_field(data, "time_expire") {
        IntField::Missing => None,
        IntField::Value(t) if (now + 60..=now + 7 * 86_400).contains(&t) => Some(t),
        _ => {
            errors.add(Code::InvalidTimeExpire, "time_expire", MSG_TIME_EXPIRE);
            None
        }
    };
    let description = match data.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION_CHARS => Some(d.clone()),
        Some(_) => {
            errors.add(Code::InvalidDescription, "description", MSG_BAD_DATA);
            None
        }
    };
    let metadata = match data.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(Value::Object(m.clone())),
        Some(_) => {
            errors.add(Code::InvalidMetadata, "metadata", MSG_BAD_DATA);
            None
        }
    };
    let allocation = match data.get("allocation") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(split)) => *split,
        Some(_) => {
            errors.add(Code::InvalidAllocation, "allocation", MSG_BAD_DATA);
            false
        }
    };
    errors.finish(|| PurchaseRequest {
        buyer,
        seller,
        amount,
        subject,
        body,
        client_ip,
        time_expire,
        description,
        metadata,
        allocation,
    })
}

pub const REWARD_SUBJECT: &str = "打赏";

/// `reward` with the money at Ping++: `user` (the creator, a sub-merchant), `amount`, `body`?,
/// `return_url` (where the tipper's e-wallet page returns), `client_ip`?: a split purchase paid
/// from the tipper's e-wallet, the platform's commission split off it once paid.
pub fn parse_reward(
    tipper: i64,
    data: &Map<String, Value>,
) -> Result<(PurchaseRequest, String), Rejection> {
    let mut errors = FieldErrors::default();
    let seller = match int_field(data, "user") {
        IntField::Value(v) if v > 0 && v != tipper => v,
        _ => {
            errors.add(Code::InvalidUser, "user", MSG_SELLER);
            0
        }
    };
    let amount = match int_field(data, "amount") {
        IntField::Value(v) if (1..=MAX_ORDER_AMOUNT).contains(&v) => v,
        _ => {
            errors.add(Code::InvalidAmount, "amount", MSG_AMOUNT);
            0
        }
    };
    let body = match text_field(data, "body") {
        TextField::Missing => REWARD_SUBJECT.to_owned(),
        TextField::Value(b) if b.chars().count() <= 128 => b,
        _ => {
            errors.add(Code::InvalidBody, "body", MSG_BODY);
            String::new()
        }
    };
    let client_ip = match text_field(data, "client_ip") {
        TextField::Missing => super::recharge::DEFAULT_CLIENT_IP.to_owned(),
        TextField::Value(ip) if ip.parse::<IpAddr>().is_ok() => ip,
        _ => {
            errors.add(Code::InvalidClientIp, "client_ip", MSG_CLIENT_IP);
            String::new()
        }
    };
    let return_url = match super::account::parse_return_url(data) {
        Ok(url) => url,
        Err(rejection) => {
            errors.add(rejection.code, "return_url", super::account::MSG_RETURN_URL);
            String::new()
        }
    };
    errors.finish(|| {
        (
            PurchaseRequest {
                buyer: tipper,
                seller,
                amount,
                subject: REWARD_SUBJECT.to_owned(),
                body,
                client_ip,
                time_expire: None,
                description: None,
                metadata: None,
                allocation: true,
            },
            return_url,
        )
    })
}

/// The platform's commission on a reward of `amount` at `percent`, rounded down (the creator
/// keeps any fraction of a fen).
pub fn commission(amount: i64, percent: i64) -> i64 {
    amount * percent / 100
}

/// The buyer's expense order, waiting; its target becomes the Ping++ order's id.
pub fn buyer_order(request: &PurchaseRequest) -> OrderDraft {
    OrderDraft {
        owner_id: request.buyer,
        target_type: TARGET_TYPE,
        target_id: "0".into(),
        title: TITLE,
        body: Some(request.subject.clone()),
        direction: -1,
        amount: request.amount,
        state: OrderState::Waiting,
    }
}

/// The seller's income order of a paid purchase; its target is the buyer's order.
pub fn seller_order(seller: i64, amount: i64, buyer_order: i64, subject: &str) -> OrderDraft {
    OrderDraft {
        owner_id: seller,
        target_type: TARGET_TYPE,
        target_id: buyer_order.to_string(),
        title: TITLE,
        body: Some(subject.to_owned()),
        direction: 1,
        amount,
        state: OrderState::Succeeded,
    }
}

/// A refund's orders: income for the buyer, expense for the seller; targets the buyer's order.
/// The seller's expense is what came out of the sub-merchant (`from_seller`; none when all of
/// a split order's refund came from what Ping++ still held for it).
pub fn refund_orders(
    buyer: i64,
    seller: i64,
    amount: i64,
    from_seller: i64,
    buyer_order: i64,
) -> Vec<OrderDraft> {
    let draft = |owner_id, direction, amount| OrderDraft {
        owner_id,
        target_type: REFUND_TARGET_TYPE,
        target_id: buyer_order.to_string(),
        title: REFUND_TITLE,
        body: None,
        direction,
        amount,
        state: OrderState::Succeeded,
    };
    let mut drafts = vec![draft(buyer, 1, amount)];
    if from_seller > 0 {
        drafts.push(draft(seller, -1, from_seller));
    }
    drafts
}

/// Ping++'s `merchant_order_no` of a purchase: `o` and the buyer's order id in 19 digits.
pub fn merchant_order_no(order_id: i64) -> String {
    format!("o{order_id:019}")
}

/// A refund's `order_no`: `r` and its row id in 19 digits.
pub fn refund_order_no(refund_id: i64) -> String {
    format!("r{refund_id:019}")
}

/// `order.pay`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PayRequest {
    pub order: i64,
    pub channel: String,
    /// As sent, if sent: it must be the order's amount (an order is paid in one charge).
    pub charge_amount: Option<i64>,
    pub extra: Option<Value>,
}

pub fn parse_pay(data: &Map<String, Value>) -> Result<PayRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let order = match int_field(data, "order") {
        IntField::Value(v) if v > 0 => v,
        IntField::Missing => {
            errors.add(
                Code::OrderRequired,
                "order",
                super::query::MSG_ORDER_REQUIRED,
            );
            0
        }
        _ => {
            errors.add(Code::InvalidOrder, "order", MSG_BAD_DATA);
            0
        }
    };
    let channel = match text_field(data, "channel") {
        TextField::Value(c) if CHANNELS.contains(&c.as_str()) => c,
        _ => {
            errors.add(Code::UnsupportedChannel, "channel", MSG_CHANNEL);
            String::new()
        }
    };
    let charge_amount = match int_field(data, "charge_amount") {
        IntField::Missing => None,
        IntField::Value(v) if v > 0 => Some(v),
        _ => {
            errors.add(Code::InvalidAmount, "charge_amount", MSG_CHARGE_AMOUNT);
            None
        }
    };
    let extra = match data.get("extra") {
        None | Some(Value::Null) => None,
        Some(Value::Object(extra)) => Some(Value::Object(extra.clone())),
        Some(_) => {
            errors.add(Code::InvalidExtra, "extra", MSG_BAD_DATA);
            None
        }
    };
    if channel == "balance" {
        let url = extra
            .as_ref()
            .and_then(|e| e.get("return_url"))
            .and_then(Value::as_str);
        if url.is_none_or(|u| super::cash::check_return_url(u).is_err()) {
            errors.add(Code::InvalidExtra, "extra.return_url", MSG_RETURN_URL);
        }
    }
    errors.finish(|| PayRequest {
        order,
        channel,
        charge_amount,
        extra,
    })
}

/// `order.refund`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRequest {
    pub order: i64,
    pub amount: i64,
    pub description: String,
}

pub fn parse_refund(data: &Map<String, Value>) -> Result<RefundRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let order = match int_field(data, "order") {
        IntField::Value(v) if v > 0 => v,
        _ => {
            errors.add(Code::InvalidOrder, "order", MSG_BAD_DATA);
            0
        }
    };
    let amount = match int_field(data, "amount") {
        IntField::Value(v) if (1..=MAX_ORDER_AMOUNT).contains(&v) => v,
        _ => {
            errors.add(Code::InvalidAmount, "amount", MSG_AMOUNT);
            0
        }
    };
    let description = text_within(
        data,
        "description",
        MAX_DESCRIPTION_CHARS,
        &mut errors,
        Code::InvalidDescription,
        MSG_DESCRIPTION,
    );
    errors.finish(|| RefundRequest {
        order,
        amount,
        description,
    })
}

/// What a Ping++ order says of its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub id: String,
    pub merchant_order_no: String,
    pub amount: i64,
    pub status: String,
    /// Paid in full, with the charge that paid it and its channel.
    pub paid: Option<(String, String)>,
    /// Canceled (expired unpaid): it will never be paid.
    pub canceled: bool,
}

pub fn order_facts(order: &Value) -> Result<OrderFacts, String> {
    if order.get("object").and_then(Value::as_str) != Some("order") {
        return Err("not an order object".into());
    }
    let text = |name: &str| {
        order
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("the order has no {name}"))
    };
    let amount = order
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .ok_or("the order has no positive amount")?;
    let status = text("status")?;
    let amount_paid = order
        .get("amount_paid")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let paid_flag = order.get("paid").and_then(Value::as_bool) == Some(true);
    let paid = if paid_flag && amount_paid >= amount {
        let charges = order
            .get("charges")
            .and_then(|c| c.get("data"))
            .and_then(Value::as_array);
        let charge = charges
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("paid").and_then(Value::as_bool) == Some(true))
            })
            .ok_or("a paid order without a paid charge")?;
        let id = charge
            .get("id")
            .and_then(Value::as_str)
            .ok_or("a paid charge without an id")?;
        let channel = charge
            .get("channel")
            .and_then(Value::as_str)
            .ok_or("a paid charge without a channel")?;
        Some((id.to_owned(), channel.to_owned()))
    } else {
        None
    };
    Ok(OrderFacts {
        id: text("id")?,
        merchant_order_no: text("merchant_order_no")?,
        amount,
        canceled: matches!(status.as_str(), "canceled" | "cancelled") && paid.is_none(),
        status,
        paid,
    })
}

/// The journals of a paid purchase: from the buyer's e-wallet to the seller's sub-merchant (a
/// split order's to what Ping++ holds for it, `allocations_pending`); a channel's money comes
/// into the e-wallet from outside first, so the buyer's order has its entry as every order
/// does and the e-wallet's balance is unchanged.
pub fn payment(
    buyer: i64,
    to: AccountRef,
    amount: i64,
    channel: &str,
) -> Option<Vec<(&'static str, Journal)>> {
    let mut journals = Vec::new();
    if channel != "balance" {
        journals.push((
            "order.channel_in",
            Journal::transfer(
                AccountRef::System(SystemAccount::EwalletOutside),
                AccountRef::Wallet(buyer),
                amount,
            )
            .ok()?,
        ));
    }
    journals.push((
        "order",
        Journal::transfer(AccountRef::Wallet(buyer), to, amount).ok()?,
    ));
    Some(journals)
}

/// The journals of a refund that succeeded: back from the seller's sub-merchant to the buyer
/// (of a split order, `from_held` of it from what Ping++ still holds for the order), and on to
/// the channel the order was paid through.
pub fn refund(
    buyer: i64,
    seller: i64,
    amount: i64,
    from_held: i64,
    channel: &str,
) -> Option<Vec<(&'static str, Journal)>> {
    let mut entries = vec![(AccountRef::Wallet(buyer), amount)];
    if from_held > 0 {
        entries.push((
            AccountRef::System(SystemAccount::AllocationsPending),
            -from_held,
        ));
    }
    if amount > from_held {
        entries.push((AccountRef::Merchant(seller), -(amount - from_held)));
    }
    let mut journals = vec![("order.refund", Journal::new(&entries).ok()?)];
    if channel != "balance" {
        journals.push((
            "order.refund_out",
            Journal::transfer(
                AccountRef::Wallet(buyer),
                AccountRef::System(SystemAccount::EwalletOutside),
                amount,
            )
            .ok()?,
        ));
    }
    Some(journals)
}

/// What a Ping++ order refund says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFacts {
    pub id: String,
    pub order_no: String,
    pub amount: i64,
    pub status: RefundStatus,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn parse(word: &str) -> Option<RefundStatus> {
        Some(match word {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            _ => return None,
        })
    }
}

pub fn refund_facts(refund: &Value) -> Result<RefundFacts, String> {
    if refund.get("object").and_then(Value::as_str) != Some("order_refund") {
        return Err("not an order_refund object".into());
    }
    let text = |name: &str| {
        refund
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("the refund has no {name}"))
    };
    let word = text("status")?;
    let status = match word.as_str() {
        "created" | "pending" | "processing" => RefundStatus::Pending,
        "succeeded" | "success" => RefundStatus::Succeeded,
        "failed" => RefundStatus::Failed,
        other => return Err(format!("unknown refund status {other:?}")),
    };
    Ok(RefundFacts {
        id: text("id")?,
        order_no: text("order_no")?,
        amount: refund
            .get("amount")
            .and_then(|a| a.as_i64().or_else(|| a.as_str()?.parse().ok()))
            .filter(|a| *a > 0)
            .ok_or("the refund has no positive amount")?,
        status,
        reason: refund
            .get("failure_msg")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_order_is_checked_before_ping_plus_plus_is_asked() {
        let ok = parse_create(
            1,
            &data(json!({"seller": 2, "amount": 100, "subject": "打赏", "body": "一篇文章", "client_ip": "::1"})),
            0,
        )
        .unwrap();
        assert_eq!((ok.seller, ok.amount), (2, 100));
        let refused = parse_create(
            1,
            &data(json!({"seller": 1, "amount": 0, "subject": "x".repeat(33), "client_ip": "nope", "allocation": "yes"})),
            0,
        )
        .unwrap_err();
        for field in [
            "seller",
            "amount",
            "subject",
            "body",
            "client_ip",
            "allocation",
        ] {
            assert!(refused.errors.contains_key(field), "{field}");
        }
    }

    #[test]
    fn paying_by_balance_needs_a_return_url() {
        let refused = parse_pay(&data(json!({"order": 5, "channel": "balance"}))).unwrap_err();
        assert!(refused.errors.contains_key("extra.return_url"));
        let wrong = parse_pay(&data(
            json!({"order": 5, "channel": "yeepay_wx_pub", "charge_amount": -1}),
        ))
        .unwrap_err();
        assert!(wrong.errors.contains_key("charge_amount"));
        assert!(parse_pay(&data(json!({"order": 5, "channel": "wx"}))).is_err());
    }

    #[test]
    fn journals_balance_and_a_channel_passes_through_the_wallet() {
        let balance = payment(1, AccountRef::Merchant(2), 100, "balance").unwrap();
        assert_eq!(balance.len(), 1);
        let channel = payment(1, AccountRef::Merchant(2), 100, "yeepay_wx_pub").unwrap();
        assert_eq!(channel.len(), 2);
        let back = refund(1, 2, 40, 0, "yeepay_wx_pub").unwrap();
        assert_eq!(back.len(), 2);
        let split = refund(1, 2, 40, 30, "balance").unwrap();
        assert_eq!(split[0].1.entries().count(), 3);
    }

    #[test]
    fn orders_are_read_paid_only_with_their_charge() {
        let order = json!({"object": "order", "id": "2012", "merchant_order_no": "o1", "amount": 100,
            "status": "paid", "paid": true, "amount_paid": 100,
            "charges": {"data": [{"id": "ch_1", "paid": true, "channel": "balance"}]}});
        let facts = order_facts(&order).unwrap();
        assert_eq!(facts.paid, Some(("ch_1".into(), "balance".into())));
        let created = json!({"object": "order", "id": "2012", "merchant_order_no": "o1", "amount": 100,
            "status": "created", "paid": false, "amount_paid": 0});
        assert_eq!(order_facts(&created).unwrap().paid, None);
    }
}
