//! The wallet's rules in plain Rust: what a command is, what it may do to money, and every
//! outcome it can have. Nothing here knows about RabbitMQ, PostgreSQL or HTTP.

pub mod account;
pub mod allocation;
pub mod cash;
pub mod command;
pub mod custody;
pub mod deposit;
pub mod event;
pub mod history;
pub mod hold;
pub mod ledger;
pub mod limits;
pub mod merchant;
pub mod merkle;
pub mod operators;
pub mod order;
pub mod outcome;
pub mod policy;
pub mod purchase;
pub mod query;
pub mod recharge;
pub mod recharge_object;
pub mod redpacket;
pub mod refund;
pub mod transfer;
pub mod transform;
pub mod validate;
