//! `transform`: fen from the wallet become points (积分) at the settings' ratio. The fen go to
//! the platform's transform revenue; the points are issued from the points-issued account.

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, SystemAccount, WalletFigures};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, Rejection};
use super::policy::WalletPolicy;
use super::validate::{int_field, IntField};

pub const MSG_AMOUNT_REQUIRED: &str = "请选择需要转换的余额";
pub const MSG_INVALID_AMOUNT: &str = "余额参数不合法";
pub const MSG_INSUFFICIENT: &str = "账户余额不足";
pub const MSG_DONE: &str = "操作成功";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformRequest {
    pub user: i64,
    /// Fen taken from the wallet.
    pub amount: i64,
    /// Points given for them.
    pub points: i64,
}

pub fn parse(
    user: i64,
    data: &Map<String, Value>,
    policy: &WalletPolicy,
) -> Result<TransformRequest, Rejection> {
    let invalid = |code| Err(Rejection::field(code, "amount", MSG_INVALID_AMOUNT));
    let amount = match int_field(data, "amount") {
        IntField::Missing => {
            return Err(Rejection::field(
                Code::AmountRequired,
                "amount",
                MSG_AMOUNT_REQUIRED,
            ))
        }
        IntField::NotInteger => return invalid(Code::InvalidAmount),
        IntField::Overflow => return invalid(Code::AmountOverflow),
        IntField::Value(v) if v < policy.transform_min => return invalid(Code::AmountTooSmall),
        IntField::Value(v) => v,
    };
    match amount.checked_mul(policy.ratio) {
        Some(points) => Ok(TransformRequest {
            user,
            amount,
            points,
        }),
        None => invalid(Code::AmountOverflow),
    }
}

pub fn decide(
    request: &TransformRequest,
    wallet: impl Into<WalletFigures>,
    points_balance: i64,
) -> Result<Journal, Rejection> {
    let wallet = wallet.into();
    if request.amount > wallet.balance {
        return Err(Rejection::field(
            Code::InsufficientBalance,
            "amount",
            MSG_INSUFFICIENT,
        ));
    }
    let overflow = || Rejection::field(Code::AmountOverflow, "amount", MSG_INVALID_AMOUNT);
    wallet.moved(-request.amount).ok_or_else(overflow)?;
    WalletFigures::from(points_balance)
        .moved(request.points)
        .ok_or_else(overflow)?;
    Journal::new(&[
        (AccountRef::Wallet(request.user), -request.amount),
        (
            AccountRef::System(SystemAccount::TransformRevenue),
            request.amount,
        ),
        (
            AccountRef::System(SystemAccount::PointsIssued),
            -request.points,
        ),
        (AccountRef::Points(request.user), request.points),
    ])
    .map_err(|_| overflow())
}

pub fn order(request: &TransformRequest) -> OrderDraft {
    OrderDraft {
        owner_id: request.user,
        target_type: "transform",
        target_id: request.user.to_string(),
        title: "积分转换",
        body: Some(format!("充值{}积分", request.points)),
        direction: -1,
        amount: request.amount,
        state: OrderState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_with(v: Value, ratio: i64) -> Result<TransformRequest, Rejection> {
        let policy = WalletPolicy {
            ratio,
            ..WalletPolicy::default()
        };
        parse(3, v.as_object().unwrap(), &policy)
    }

    #[test]
    fn converts_at_the_ratio() {
        let r = parse_with(json!({"amount": 150}), 200).unwrap();
        assert_eq!((r.amount, r.points), (150, 30_000));
        assert_eq!(order(&r).body.as_deref(), Some("充值30000积分"));
        let j = decide(&r, 150, 0).unwrap();
        assert_eq!(j.entries().count(), 4);
    }

    #[test]
    fn rejects_with_the_wallet_api_words() {
        let code = |v: Value| parse_with(v, 1).unwrap_err();
        assert_eq!(code(json!({})).messages(), vec![MSG_AMOUNT_REQUIRED]);
        assert_eq!(code(json!({"amount": 99})).code, Code::AmountTooSmall);
        assert_eq!(code(json!({"amount": "x"})).code, Code::InvalidAmount);
        assert_eq!(
            parse_with(json!({"amount": i64::MAX}), 2).unwrap_err().code,
            Code::AmountOverflow
        );
        let r = parse_with(json!({"amount": 100}), 1).unwrap();
        let e = decide(&r, 99, 0).unwrap_err();
        assert_eq!(
            (e.code, e.messages()),
            (Code::InsufficientBalance, vec![MSG_INSUFFICIENT.to_owned()])
        );
        assert_eq!(
            decide(&r, 100, i64::MAX).unwrap_err().code,
            Code::AmountOverflow
        );
    }
}
