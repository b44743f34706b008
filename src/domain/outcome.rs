//! Every way a command can end, named once (as TigerBeetle names each transfer result), and
//! the result message upstream receives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a command was rejected: a stable, machine-readable reason (`code` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The message is not a decodable command.
    Malformed,
    /// The same id arrived earlier with different content.
    IdempotencyConflict,
    /// `data` is not a JSON object.
    InvalidData,
    /// A text holds what the ledger cannot store (U+0000).
    InvalidText,
    AmountRequired,
    /// The amount is not an integer.
    InvalidAmount,
    AmountTooSmall,
    AmountTooLarge,
    /// Applying the amount would overflow a balance.
    AmountOverflow,
    InsufficientBalance,
    UserRequired,
    /// A user id that is not a positive integer.
    InvalidUser,
    SelfTransfer,
    InvalidBody,
    ChannelRequired,
    /// A recharge channel the settings don't open.
    UnsupportedChannel,
    /// `extra` is not an object, or lacks what the channel needs.
    InvalidExtra,
    InvalidClientIp,
    CashTypeRequired,
    UnsupportedCashType,
    AccountRequired,
    InvalidAccount,
    RemarkRequired,
    InvalidRemark,
    CashRequired,
    InvalidCash,
    UnknownCash,
    /// The cash request was already decided the other way.
    CashAlreadyDecided,
    /// This operator's approval of the cash request is recorded already; another operator's
    /// is needed.
    AlreadyApproved,
    /// An operator may not approve their own cash request.
    OwnCashRequest,
    OrderRequired,
    InvalidOrder,
    /// No such order among the caller's.
    UnknownOrder,
    /// The order exists but is not a Ping++ recharge.
    NotRecharge,
    InvalidLimit,
    InvalidAfter,
    InvalidAction,
    /// `wallet.changes` without the version to start after.
    SinceRequired,
    /// A `since` that is not a version (an integer from 0).
    InvalidSince,
    /// A `unit` that names no user account with versions to page through (`fen`, `point`).
    InvalidUnit,
    /// `wallet.statement` without `from` or `to`.
    TimeRequired,
    /// A time that is not `YYYY-MM-DD HH:MM:SS`.
    InvalidTime,
    /// A statement's `to` not after its `from`.
    InvalidPeriod,
    /// More entries in a statement's period than one statement lists.
    StatementTooLong,
    /// `wallet.proof` without the day of the root.
    DayRequired,
    /// A `day` that is not a date `YYYY-MM-DD`.
    InvalidDay,
    /// No root is recorded for that day (not ended yet, or not recorded yet).
    RootNotFound,
    /// The wallet had no entry when the day's root was recorded: no leaf of it.
    WalletNotInRoot,
    /// Ping++ refused the request (its error type and message are in the result).
    PaymentProviderError,
    /// The charge Ping++ returned disagrees with the order.
    ChargeMismatch,
    /// The withdrawal Ping++ returned disagrees with the cash record.
    WithdrawalMismatch,
    /// `user_fee` is not a non-negative integer below the amount.
    InvalidUserFee,
    /// `balance_bonus` is not a non-negative integer (or `{amount}`).
    InvalidBalanceBonus,
    /// `user_fee` and `balance_bonus` together: Ping++ takes one or the other.
    FeeAndBonus,
    /// `description` is not a string of at most 255 characters.
    InvalidDescription,
    /// `metadata` is not an object.
    InvalidMetadata,
    /// `time_expire` is not a unix time 1 minute to 15 days ahead.
    InvalidTimeExpire,
    /// The command does not exist in the configured `wallet.custody`.
    CustodyMode,
    /// The user's Ping++ e-wallet is not open (no application succeeded).
    AccountNotOpen,
    /// `account.open` for a user whose application succeeded already.
    AccountAlreadyOpen,
    /// `account.open` while the user's application is still being reviewed.
    AccountApplicationPending,
    InvalidCertType,
    InvalidCertName,
    InvalidCertNumber,
    InvalidMobile,
    /// `return_url` is not an http(s) link.
    InvalidReturnUrl,
    /// `pic` is not base64 of an image.
    InvalidPic,
    /// `pic` is larger than `wallet.pic_max_bytes`.
    PicTooLarge,
    /// The deposit Ping++ returned disagrees with the order.
    DepositMismatch,
    /// `display_name` is not 2 to 50 characters.
    InvalidDisplayName,
    /// `kind` is neither `enterprise` nor `micro`.
    InvalidMerchantKind,
    /// A field of a merchant application is missing, too long, not one of its words, or
    /// not in the document at all.
    InvalidApplication,
    /// The user has no sub-merchant (`merchant.create` first).
    NotAMerchant,
    /// `merchant.create` for a user who has one.
    AlreadyAMerchant,
    /// `merchant.apply` while an application is under review, or after one completed.
    MerchantApplicationPending,
    /// The sub-merchant's application has not completed.
    MerchantNotOpen,
    /// `merchant.apply` after an application completed.
    MerchantAlreadyOpen,
    /// No such merchant application among the user's.
    UnknownApplication,
    /// Ping++ may or may not have acted, and the request may not be sent again: nothing will
    /// be resent by itself; an operator decides.
    ProviderOutcomeUnknown,
    /// `allocation` is not a boolean, or asks for a split order (not served yet).
    InvalidAllocation,
    /// The order can't be paid now (paid, failed, or not made at Ping++ yet).
    OrderNotPayable,
    /// A refund of an order that was not paid.
    OrderNotPaid,
    /// A refund larger than what the order has left to refund.
    RefundTooLarge,
    /// No such refund of this order.
    UnknownRefund,
    /// The order Ping++ returned disagrees with pluspay's.
    OrderMismatch,
    /// `recipients` or `senders` is not 1 to 50 distinct users with positive amounts.
    InvalidShares,
    /// An allocation command for an order that is not a split order.
    NotSplitOrder,
    /// Shares larger than what the split order still holds (or a user gives back more than
    /// they received).
    AllocationTooLarge,
    /// The split order's allocation was completed (or its completion is under way).
    AllocationCompleted,
    /// No such allocation of the user's orders.
    UnknownAllocation,
    /// A completion while an allocation, allocation refund or refund of the order is under way.
    AllocationInProgress,
    /// A reward's allocations and refunds are the platform's to settle, not the creator's.
    RewardOrder,
    /// An operator command from a publisher that is not an operator.
    Forbidden,
    ReasonRequired,
    /// `reason` is not text of at most 255 characters.
    InvalidReason,
    ExpiresInRequired,
    /// `expires_in` is not a whole number of seconds within the command's range.
    InvalidExpiresIn,
    HoldRequired,
    InvalidHold,
    /// No such hold among the acting user's.
    HoldNotFound,
    /// The hold was captured, released or expired (or its expiry has come).
    HoldClosed,
    /// One more would pass the user's daily limit on this command type (count or sum).
    LimitExceeded,
    /// The wallet is frozen by an operator: it sends nothing (it still receives).
    WalletFrozen,
    LimitTypeRequired,
    /// `type` is not a command type that takes a daily limit.
    InvalidLimitType,
    /// `recharge.refund` of a recharge made as a Ping++ recharge object (fee or bonus).
    NotRefundable,
    CountRequired,
    /// `count` is not a whole number of shares from 1 to the most a red packet may have.
    InvalidCount,
    ModeRequired,
    /// `mode` is neither `equal` nor `random`.
    InvalidMode,
    /// `users` is not a list of distinct other users, or too long or too short for the packet.
    InvalidUsers,
    RedpacketRequired,
    InvalidRedpacket,
    /// No such red packet.
    RedpacketNotFound,
    /// Every share of the red packet is claimed.
    RedpacketEmpty,
    /// The red packet's expiry has come.
    RedpacketExpired,
    /// The user holds a share of this red packet already.
    AlreadyClaimed,
    /// The user may not claim (or see) this red packet: their own, or one for other users.
    NotAllowed,
}

impl Code {
    /// The code as it is on the wire (serde's snake_case name).
    pub fn as_str(self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(name)) => name,
            _ => unreachable!("a unit variant serializes as its name"),
        }
    }
}

pub const MSG_IDEMPOTENCY_CONFLICT: &str = "该请求ID已用于另一个不同的请求";

pub const MSG_FORBIDDEN: &str = "无权执行此操作";

/// An operator command whose message the broker did not prove to come from an operator.
pub fn forbidden() -> Rejection {
    Rejection::field(Code::Forbidden, "type", MSG_FORBIDDEN)
}

/// The command's id was used by a command with other content (or is held by one in progress).
pub fn idempotency_conflict() -> Rejection {
    Rejection::field(Code::IdempotencyConflict, "id", MSG_IDEMPOTENCY_CONFLICT)
}

/// A refusal: a code, the messages shown to the user, and the messages of each offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub errors: BTreeMap<String, Vec<String>>,
}

impl Rejection {
    pub fn field(code: Code, field: &str, message: &str) -> Self {
        let mut errors = BTreeMap::new();
        errors.insert(field.to_owned(), vec![message.to_owned()]);
        Rejection { code, errors }
    }

    /// The user-facing messages: each field's messages, in field order.
    pub fn messages(&self) -> Vec<String> {
        self.errors.values().flatten().cloned().collect()
    }
}

/// Collects every field error of one command, as Laravel's validator does, so upstream can show
/// them all at once; the first error found decides the `code`.
#[derive(Debug, Default)]
pub struct FieldErrors {
    first: Option<Code>,
    errors: BTreeMap<String, Vec<String>>,
}

impl FieldErrors {
    pub fn add(&mut self, code: Code, field: &str, message: &str) {
        self.first.get_or_insert(code);
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message.to_owned());
    }

    /// `Ok(value)` when no error was added.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Rejection> {
        match self.first {
            None => Ok(value()),
            Some(code) => Err(Rejection {
                code,
                errors: self.errors,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Rejected => "rejected",
        }
    }
}

/// The result message of one command (docs/CONTRACT.md §1, "Result").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// `null` only for a malformed message whose id could not be read.
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub user_id: Option<i64>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<Code>,
    pub message: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<Value>,
}

impl CommandResult {
    pub fn succeeded(id: &str, kind: &str, user_id: i64, message: &str, data: Value) -> Self {
        CommandResult {
            id: Some(id.to_owned()),
            kind: Some(kind.to_owned()),
            user_id: Some(user_id),
            status: Status::Succeeded,
            code: None,
            message: vec![message.to_owned()],
            errors: None,
            data: Some(data),
        }
    }

    pub fn rejected(id: &str, kind: &str, user_id: i64, rejection: Rejection) -> Self {
        CommandResult {
            id: Some(id.to_owned()),
            kind: Some(kind.to_owned()),
            user_id: Some(user_id),
            status: Status::Rejected,
            code: Some(rejection.code),
            message: rejection.messages(),
            errors: Some(rejection.errors),
            data: None,
        }
    }

    /// The AMQP routing key on the results exchange: `<type>.<status>`.
    pub fn routing_key(&self) -> String {
        format!(
            "{}.{}",
            self.kind.as_deref().unwrap_or("unknown"),
            self.status.as_str()
        )
    }
}
