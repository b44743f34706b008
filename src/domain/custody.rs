//! Who holds the users' money (`wallet.custody`): the platform, with pluspay's ledger as the
//! wallets themselves, or Ping++, with each user's money in their own Ping++/YeePay e-wallet and
//! pluspay's ledger the platform's exact record of it. Each command exists in one mode or both.

use serde::{Deserialize, Serialize};

use super::command::CommandType;
use super::ledger::SystemAccount;
use super::outcome::{Code, Rejection};

pub const MSG_CUSTODY_MODE: &str = "当前钱包模式不支持该操作";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Custody {
    /// The platform holds the money; wallets are pluspay's accounts.
    #[default]
    Platform,
    /// Ping++ holds it, in the users' e-wallets; a wallet account mirrors the user's e-wallet.
    Pingpp,
}

impl Custody {
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Platform => "platform",
            Custody::Pingpp => "pingpp",
        }
    }

    pub fn parse(word: &str) -> Option<Custody> {
        match word {
            "platform" => Some(Custody::Platform),
            "pingpp" => Some(Custody::Pingpp),
            _ => None,
        }
    }

    /// Whether the command exists in this mode. With the money at Ping++, pluspay can't move
    /// it between users or into points by itself (that takes Ping++ orders: a `reward` is one),
    /// and a user's
    /// withdrawal from their own e-wallet has no operator review; the e-wallet commands exist
    /// only there.
    pub fn offers(self, kind: CommandType) -> bool {
        use CommandType::*;
        match kind {
            Transfer | Transform | CashApprove | CashReject | HoldCreate | HoldCapture
            | HoldRelease | WalletFreeze | WalletUnfreeze | LimitsSet | RechargeRefund => {
                self == Custody::Platform
            }
            // A red packet's money waits in the sender's `packets` account, which only the
            // platform's ledger has.
            RedpacketCreate | RedpacketClaim | RedpacketGet => self == Custody::Platform,
            // docs/CONTRACT.md §5, with the platform's ledger.
            WalletChanges | WalletStatement => self == Custody::Platform,
            // The daily roots cover the platform ledger's accounts.
            WalletProof => self == Custody::Platform,
            AccountOpen
            | AccountGet
            | AccountCards
            | UploadPic
            | CardBin
            | MerchantCreate
            | MerchantGet
            | MerchantApply
            | MerchantApplicationGet
            | MerchantSettleAccount
            | OrderCreate
            | OrderPay
            | OrderGet
            | OrderRefund
            | OrderRefunds
            | OrderRefundGet
            | AllocationCreate
            | AllocationGet
            | AllocationRefund
            | AllocationComplete => self == Custody::Pingpp,
            Recharge | RechargeRetrieve | Cash | CashRetrieve | Reward | OrdersList | OrdersGet
            | CashesList | WalletGet | ChargesList | ChargesGet => true,
        }
    }

    /// The account a withdrawal's money waits in until Ping++ reports it final.
    pub fn withdrawals_pending(self) -> SystemAccount {
        match self {
            Custody::Platform => SystemAccount::PendingPayouts,
            Custody::Pingpp => SystemAccount::EwalletWithdrawals,
        }
    }

    /// Where a withdrawal's money goes once Ping++ paid it out.
    pub fn withdrawals_paid(self) -> SystemAccount {
        match self {
            Custody::Platform => SystemAccount::PaidOut,
            Custody::Pingpp => SystemAccount::EwalletOutside,
        }
    }
}

pub fn not_in_this_mode() -> Rejection {
    Rejection::field(Code::CustodyMode, "type", MSG_CUSTODY_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_exists_in_at_least_one_mode() {
        for kind in CommandType::ALL {
            assert!(
                Custody::Platform.offers(kind) || Custody::Pingpp.offers(kind),
                "{kind:?}"
            );
        }
        assert!(!Custody::Pingpp.offers(CommandType::Transfer));
        assert!(!Custody::Platform.offers(CommandType::AccountOpen));
        assert!(Custody::Pingpp.offers(CommandType::Recharge));
        assert!(!Custody::Pingpp.offers(CommandType::RechargeRefund));
        assert!(!Custody::Pingpp.offers(CommandType::WalletChanges));
        assert!(Custody::Platform.offers(CommandType::WalletChanges));
        assert!(!Custody::Pingpp.offers(CommandType::WalletStatement));
        assert!(!Custody::Pingpp.offers(CommandType::WalletProof));
        assert!(Custody::Platform.offers(CommandType::WalletProof));
    }
}
