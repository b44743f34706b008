//! pluspay: wallet commands from RabbitMQ, applied exactly once to a double-entry ledger in
//! PostgreSQL. `domain` holds the rules; `db` and `amqp` are the adapters around them; `webhook`
//! receives Ping++ events over HTTP.

pub mod amqp;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod dead_letters;
pub mod domain;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod pingpp;
pub mod redact;
pub mod send;
pub mod service;
pub mod webhook;
pub mod worker;
