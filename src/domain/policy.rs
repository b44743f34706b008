//! The wallet's settings (`[wallet]`): which channels and cash types are open, the limits, and
//! what `wallet.get` shows, as the older wallet API's "钱包信息" describes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::account::MAX_PIC_BYTES;
use super::custody::Custody;
use super::ledger::MAX_COMMAND_AMOUNT;
use super::limits::DailyLimit;

/// Channels that need `extra.success_url`: Ping++ requires it for the first two, the wallet API's
/// platform for all four (it sends the payer back to its page).
pub const CHANNELS_NEEDING_SUCCESS_URL: [&str; 4] =
    ["alipay_wap", "alipay_pc_direct", "alipay_qr", "wx_wap"];

pub const MAX_RATIO: i64 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalletPolicy {
    /// Ping++ channels `recharge` accepts; empty closes recharging.
    pub recharge_types: Vec<String>,
    /// Smallest and largest recharge, in fen.
    pub recharge_min: i64,
    pub recharge_max: i64,
    /// Suggested recharge amounts in fen, shown by `wallet.get`.
    pub labels: Vec<i64>,
    /// Points per fen for `transform`.
    pub ratio: i64,
    /// The recharge and cash rules text shown by `wallet.get`.
    pub rule: String,
    /// Payout methods `cash` accepts; empty closes cashing out.
    pub cash_types: Vec<String>,
    /// Smallest cash request, in fen.
    pub cash_min: i64,
    /// Cash requests above it (fen) need the approvals of two different operators; none: one
    /// operator's approval settles every request.
    pub cash_review_threshold: Option<i64>,
    /// Smallest transform, in fen.
    pub transform_min: i64,
    /// Who holds the users' money: the platform, or Ping++ in the users' e-wallets.
    pub custody: Custody,
    /// The largest picture `upload_pic` takes, in bytes (decoded).
    pub pic_max_bytes: usize,
    /// With the money at Ping++: the platform's share of a reward, in percent, split to
    /// `platform_user_id` by allocation.
    pub reward_commission_percent: i64,
    /// The pluspay user whose e-wallet takes the platform's commission (0: none).
    pub platform_user_id: i64,
    /// Every user's daily limits by command type (`[wallet.daily_limits.transfer]`, ...);
    /// `limits.set` gives a user their own instead.
    pub daily_limits: BTreeMap<String, DailyLimit>,
    /// The hours east of UTC where a limit's day begins at midnight: 8, China Standard Time.
    pub day_offset_hours: i32,
}

impl Default for WalletPolicy {
    fn default() -> Self {
        WalletPolicy {
            recharge_types: [
                "applepay_upacp",
                "alipay",
                "alipay_wap",
                "alipay_pc_direct",
                "alipay_qr",
                "wx",
                "wx_wap",
            ]
            .map(String::from)
            .to_vec(),
            recharge_min: 1,
            recharge_max: 1_000_000,
            labels: vec![550, 2000, 9900],
            ratio: 1,
            rule: String::new(),
            cash_types: vec!["alipay".into(), "wechat".into()],
            cash_min: 100,
            cash_review_threshold: None,
            transform_min: 100,
            custody: Custody::Platform,
            pic_max_bytes: 2 * 1024 * 1024,
            reward_commission_percent: 0,
            platform_user_id: 0,
            daily_limits: BTreeMap::new(),
            day_offset_hours: 8,
        }
    }
}

impl WalletPolicy {
    /// The settings' daily limit on a command type, if any.
    pub fn daily_limit(&self, kind: super::command::CommandType) -> Option<DailyLimit> {
        self.daily_limits.get(kind.as_str()).copied()
    }

    /// Names the first setting that makes no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.recharge_min < 1 {
            return Err("wallet.recharge_min must be at least 1".into());
        }
        if self.recharge_max < self.recharge_min {
            return Err("wallet.recharge_max must be at least wallet.recharge_min".into());
        }
        // A paid recharge cannot be refused any more, so its largest size is what keeps the
        // wallets' running totals from ever overflowing (see ledger::WALLET_CEILING).
        for (name, value) in [
            ("wallet.recharge_max", self.recharge_max),
            ("wallet.cash_min", self.cash_min),
            ("wallet.transform_min", self.transform_min),
        ] {
            if value > MAX_COMMAND_AMOUNT {
                return Err(format!(
                    "{name} must be at most {MAX_COMMAND_AMOUNT} fen (ten billion yuan)"
                ));
            }
        }
        if self.labels.iter().any(|&l| l > MAX_COMMAND_AMOUNT) {
            return Err(format!(
                "wallet.labels must be at most {MAX_COMMAND_AMOUNT} fen"
            ));
        }
        // Bounded so that points issued (the sum of every transform) stay far from i64's end.
        if !(1..=MAX_RATIO).contains(&self.ratio) {
            return Err(format!("wallet.ratio must be between 1 and {MAX_RATIO}"));
        }
        if self.cash_min < 1 {
            return Err("wallet.cash_min must be at least 1".into());
        }
        if self.cash_review_threshold.is_some_and(|t| t < 0) {
            return Err("wallet.cash_review_threshold must be at least 0 fen".into());
        }
        if self.transform_min < 1 {
            return Err("wallet.transform_min must be at least 1".into());
        }
        if self.labels.iter().any(|&l| l < 1) {
            return Err("wallet.labels must be positive amounts in fen".into());
        }
        // Below 100: the completion settles what is left on the creator, and Ping++ refuses to
        // complete with nothing left.
        if !(0..=99).contains(&self.reward_commission_percent) {
            return Err("wallet.reward_commission_percent must be between 0 and 99".into());
        }
        if self.platform_user_id < 0
            || (self.custody == Custody::Pingpp
                && self.reward_commission_percent > 0
                && self.platform_user_id == 0)
        {
            return Err(
                "wallet.platform_user_id must be the user taking the commission (wallet.reward_commission_percent above 0)"
                    .into(),
            );
        }
        super::limits::check_settings(&self.daily_limits)?;
        if !(-12..=14).contains(&self.day_offset_hours) {
            return Err("wallet.day_offset_hours must be between -12 and 14".into());
        }
        if !(1..=MAX_PIC_BYTES).contains(&self.pic_max_bytes) {
            return Err(format!(
                "wallet.pic_max_bytes must be between 1 and {MAX_PIC_BYTES}"
            ));
        }
        Ok(())
    }
}
