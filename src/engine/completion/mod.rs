//! The one path by which each Ping++ object completes what it belongs to, shared by the
//! webhook, the `*.retrieve` commands and the commands that made it: a charge its recharge
//! order, a deposit its recharge order (money at Ping++), a withdrawal its cash record, a Ping++
//! order its purchase, a refund or an allocation its share of a purchase. Each
//! locks its row first, so racing callers complete once.

pub mod allocation;
pub mod charge;
pub mod deposit;
pub mod purchase;
pub mod refund;
pub mod withdrawal;
