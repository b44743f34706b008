//! Wallet orders (钱包流水): what one is made of, and its states as the wallet API numbers them.

/// A wallet order to store, in the wallet API's shape (`direction` is its `type`: 1 income, -1
/// expense).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    pub owner_id: i64,
    pub target_type: &'static str,
    pub target_id: String,
    pub title: &'static str,
    pub body: Option<String>,
    pub direction: i16,
    pub amount: i64,
    pub state: OrderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// 0: waiting (a recharge not paid yet, a cash request not paid out yet).
    Waiting,
    /// 1: done.
    Succeeded,
    /// -1: failed (a charge failed or expired, a cash request rejected or returned).
    Failed,
}

impl OrderState {
    /// The number stored and shown.
    pub fn code(self) -> i16 {
        match self {
            OrderState::Waiting => 0,
            OrderState::Succeeded => 1,
            OrderState::Failed => -1,
        }
    }

    pub fn from_code(code: i16) -> Option<OrderState> {
        Some(match code {
            0 => OrderState::Waiting,
            1 => OrderState::Succeeded,
            -1 => OrderState::Failed,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for state in [
            OrderState::Waiting,
            OrderState::Succeeded,
            OrderState::Failed,
        ] {
            assert_eq!(OrderState::from_code(state.code()), Some(state));
        }
        assert_eq!(OrderState::from_code(2), None);
    }
}
