//! The integration tests, one binary: a module per area, against real PostgreSQL and RabbitMQ
//! (started by scripts/test.sh) and the fake Ping++ of `support::fake_pingpp`. `chaos` starts
//! servers of its own.

mod support;

mod alerts;
mod audit;
mod batch;
mod brokers;
mod cash_review;
mod chains;
mod chaos;
mod charge_records;
mod cli;
mod concurrency;
mod console;
mod contract;
mod custody;
mod dead_letters;
mod events;
mod history;
mod holds;
mod least_privilege;
mod limits;
mod merchants;
mod metrics;
mod operators;
mod php_client;
mod pingpp_accounts_client;
mod pingpp_client;
mod pingpp_merchants_client;
mod pingpp_orders_client;
mod properties;
mod purchases;
mod recharge;
mod recharge_object;
mod redpackets;
mod refunds;
mod retention;
mod statements;
mod systemd;
mod tls;
mod transfer;
mod wallet;
mod webhooks;
mod webhooks_e2e;
mod withdrawals;
