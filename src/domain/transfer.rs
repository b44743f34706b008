//! `transfer` and `reward`: money from the acting user's wallet to another user's.

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, WalletFigures};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{int_field, text_field, IntField, TextField};

pub const MAX_BODY_CHARS: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Transfer,
    Reward,
}

impl TransferKind {
    /// The command type that makes this kind of transfer.
    pub fn command(self) -> super::command::CommandType {
        match self {
            TransferKind::Transfer => super::command::CommandType::Transfer,
            TransferKind::Reward => super::command::CommandType::Reward,
        }
    }

    pub fn target_type(self) -> &'static str {
        match self {
            TransferKind::Transfer => "user",
            TransferKind::Reward => "reward",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            TransferKind::Transfer => "转账",
            TransferKind::Reward => "打赏",
        }
    }

    pub fn success_message(self) -> &'static str {
        match self {
            TransferKind::Transfer => "转账成功",
            TransferKind::Reward => "打赏成功",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub kind: TransferKind,
    pub from: i64,
    pub to: i64,
    pub amount: i64,
    pub body: Option<String>,
}

pub const MSG_AMOUNT_REQUIRED: &str = "请输入转账金额";
pub const MSG_BAD_DATA: &str = "发送的数据错误";
pub const MSG_AMOUNT_TOO_SMALL: &str = "转账金额不能小于0.01元";
pub const MSG_INSUFFICIENT: &str = "转账金额超出账户余额";
pub const MSG_USER_REQUIRED: &str = "请填写转账用户";
pub const MSG_SELF_TRANSFER: &str = "不能转账给自己";

/// Checks the fields of a `transfer` or `reward`, all of them, before any balance is read.
pub fn parse(
    kind: TransferKind,
    from: i64,
    data: &Map<String, Value>,
) -> Result<TransferRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let amount = match int_field(data, "amount") {
        IntField::Missing => {
            errors.add(Code::AmountRequired, "amount", MSG_AMOUNT_REQUIRED);
            0
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidAmount, "amount", MSG_BAD_DATA);
            0
        }
        IntField::Overflow => {
            errors.add(Code::AmountOverflow, "amount", MSG_BAD_DATA);
            0
        }
        IntField::Value(v) if v < 1 => {
            errors.add(Code::AmountTooSmall, "amount", MSG_AMOUNT_TOO_SMALL);
            0
        }
        IntField::Value(v) => v,
    };
    let to = match int_field(data, "user") {
        IntField::Missing => {
            errors.add(Code::UserRequired, "user", MSG_USER_REQUIRED);
            0
        }
        IntField::Value(v) if v > 0 => {
            if v == from {
                errors.add(Code::SelfTransfer, "user", MSG_SELF_TRANSFER);
            }
            v
        }
        _ => {
            errors.add(Code::InvalidUser, "user", MSG_BAD_DATA);
            0
        }
    };
    let body = match (kind, text_field(data, "body")) {
        (TransferKind::Reward, TextField::Value(text))
            if text.chars().count() <= MAX_BODY_CHARS =>
        {
            Some(text)
        }
        (TransferKind::Reward, TextField::Missing) | (TransferKind::Transfer, _) => None,
        (TransferKind::Reward, _) => {
            errors.add(Code::InvalidBody, "body", MSG_BAD_DATA);
            None
        }
    };
    errors.finish(|| TransferRequest {
        kind,
        from,
        to,
        amount,
        body,
    })
}

/// Decides a parsed transfer against the current figures of both wallets (a bare balance is
/// a wallet without history): refused when the sender lacks the money, or when it would take
/// a balance or running total past [`WALLET_CEILING`](super::ledger::WALLET_CEILING).
pub fn decide(
    request: &TransferRequest,
    sender: impl Into<WalletFigures>,
    receiver: impl Into<WalletFigures>,
) -> Result<Journal, Rejection> {
    let (sender, receiver) = (sender.into(), receiver.into());
    if request.amount > sender.balance {
        return Err(Rejection::field(
            Code::InsufficientBalance,
            "amount",
            MSG_INSUFFICIENT,
        ));
    }
    if sender.moved(-request.amount).is_none() || receiver.moved(request.amount).is_none() {
        return Err(Rejection::field(
            Code::AmountOverflow,
            "amount",
            MSG_BAD_DATA,
        ));
    }
    Journal::transfer(
        AccountRef::Wallet(request.from),
        AccountRef::Wallet(request.to),
        request.amount,
    )
    .map_err(|_| Rejection::field(Code::AmountOverflow, "amount", MSG_BAD_DATA))
}

/// The sender's expense order first, then the receiver's income order.
pub fn orders(request: &TransferRequest) -> [OrderDraft; 2] {
    let order = |owner_id: i64, other: i64, direction: i16| OrderDraft {
        owner_id,
        target_type: request.kind.target_type(),
        target_id: other.to_string(),
        title: request.kind.title(),
        body: request.body.clone(),
        direction,
        amount: request.amount,
        state: OrderState::Succeeded,
    };
    [
        order(request.from, request.to, -1),
        order(request.to, request.from, 1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<TransferRequest, Rejection> {
        parse(TransferKind::Transfer, 1, v.as_object().unwrap())
    }

    fn rejection(v: Value) -> (Code, Vec<String>) {
        let r = parse_json(v).unwrap_err();
        (r.code, r.messages())
    }

    #[test]
    fn accepts_a_good_transfer() {
        let r = parse_json(json!({"user": 2, "amount": 100})).unwrap();
        assert_eq!((r.from, r.to, r.amount), (1, 2, 100));
    }

    #[test]
    fn rejects_with_the_wallet_api_words() {
        assert_eq!(
            rejection(json!({"user": 2})),
            (Code::AmountRequired, vec![MSG_AMOUNT_REQUIRED.into()])
        );
        assert_eq!(
            rejection(json!({"user": 2, "amount": "100"})),
            (Code::InvalidAmount, vec![MSG_BAD_DATA.into()])
        );
        assert_eq!(
            rejection(json!({"user": 2, "amount": 1.5})),
            (Code::InvalidAmount, vec![MSG_BAD_DATA.into()])
        );
        assert_eq!(
            rejection(json!({"user": 2, "amount": 0})),
            (Code::AmountTooSmall, vec![MSG_AMOUNT_TOO_SMALL.into()])
        );
        assert_eq!(
            rejection(json!({"user": 2, "amount": -5})),
            (Code::AmountTooSmall, vec![MSG_AMOUNT_TOO_SMALL.into()])
        );
        assert_eq!(
            rejection(json!({"user": 2, "amount": 18446744073709551615u64})),
            (Code::AmountOverflow, vec![MSG_BAD_DATA.into()])
        );
        assert_eq!(
            rejection(json!({"amount": 5})),
            (Code::UserRequired, vec![MSG_USER_REQUIRED.into()])
        );
        assert_eq!(
            rejection(json!({"user": "2", "amount": 5})),
            (Code::InvalidUser, vec![MSG_BAD_DATA.into()])
        );
        assert_eq!(
            rejection(json!({"user": -2, "amount": 5})),
            (Code::InvalidUser, vec![MSG_BAD_DATA.into()])
        );
        assert_eq!(
            rejection(json!({"user": 1, "amount": 5})),
            (Code::SelfTransfer, vec![MSG_SELF_TRANSFER.into()])
        );
    }

    #[test]
    fn reports_every_bad_field() {
        let r = parse_json(json!({})).unwrap_err();
        assert_eq!(r.code, Code::AmountRequired);
        assert_eq!(r.errors.len(), 2);
    }

    #[test]
    fn decides_against_balances() {
        let req = parse_json(json!({"user": 2, "amount": 100})).unwrap();
        assert_eq!(
            decide(&req, 99, 0).unwrap_err().code,
            Code::InsufficientBalance
        );
        assert_eq!(
            decide(&req, 100, i64::MAX).unwrap_err().code,
            Code::AmountOverflow
        );
        let journal = decide(&req, 100, 0).unwrap();
        assert_eq!(journal.entries().count(), 2);
        // Running totals count too, not only the balance.
        let near = crate::domain::ledger::WALLET_CEILING - 50;
        let rich_history = WalletFigures {
            balance: 100,
            total_income: near,
            total_expenses: near,
        };
        let code = |sender, receiver| decide(&req, sender, receiver).unwrap_err().code;
        assert_eq!(code(rich_history, 0.into()), Code::AmountOverflow);
        assert_eq!(code(100.into(), rich_history), Code::AmountOverflow);
        assert!(decide(&req, rich_history, WalletFigures::default()).is_err());
        let below = WalletFigures {
            total_expenses: near - 50,
            ..rich_history
        };
        assert!(decide(&req, below, WalletFigures::default()).is_ok());
    }

    #[test]
    fn orders_mirror_each_other() {
        let req = parse(
            TransferKind::Reward,
            1,
            json!({"user": 2, "amount": 7, "body": "赞"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let [sent, received] = orders(&req);
        assert_eq!(
            (sent.owner_id, sent.direction, sent.target_id.as_str()),
            (1, -1, "2")
        );
        assert_eq!(
            (
                received.owner_id,
                received.direction,
                received.target_id.as_str()
            ),
            (2, 1, "1")
        );
        assert_eq!(sent.target_type, "reward");
        assert_eq!(sent.body.as_deref(), Some("赞"));
    }
}
