//! Many transfers among few wallets from many publishers at once: no negative balance, no lost
//! command, money conserved, and the balances are exactly what the results say happened.

use std::collections::HashMap;

use crate::support::{transfer, TestEnv};
use rand::{Rng, SeedableRng};

const WALLETS: i64 = 20;
const PUBLISHERS: usize = 16;
const TRANSFERS: usize = 2_000;
const FUNDING: i64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_transfers_conserve_money() {
    let mut env = TestEnv::new().await;
    for user in 1..=WALLETS {
        env.fund(user, FUNDING).await;
    }
    // Group commit on: contended wallets across concurrent batches, with one by one as the
    // fallback, must still conserve money.
    env.settings.worker.batch_size = 16;
    let _worker = env.start_worker();
    assert!(env.settings.amqp.prefetch > 1);

    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let settings = env.settings.clone();
        publishers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ p as u64);
            let mut client = crate::support::BrokerClient::connect(&settings).await;
            let mut sent = Vec::new();
            for i in (p..TRANSFERS).step_by(PUBLISHERS) {
                let from = rng.random_range(1..=WALLETS);
                let to = (from + rng.random_range(1..WALLETS) - 1) % WALLETS + 1;
                let amount = rng.random_range(1..=3_000);
                let command = transfer(&format!("c-{i}"), from, to, amount);
                client.command(&command).await;
                sent.push(command);
            }
            client.wait_results(sent.len()).await;
            (sent, client.received)
        }));
    }

    let mut model: HashMap<i64, i64> = (1..=WALLETS).map(|u| (u, FUNDING)).collect();
    let (mut succeeded, mut rejected) = (0, 0);
    for publisher in publishers {
        let (sent, received) = publisher.await.unwrap();
        for command in sent {
            let id = command["id"].as_str().unwrap();
            let results = &received[id];
            assert_eq!(results.len(), 1, "{id}: {results:?}");
            let result = &results[0];
            match result["status"].as_str().unwrap() {
                "succeeded" => {
                    succeeded += 1;
                    let amount = command["data"]["amount"].as_i64().unwrap();
                    *model
                        .get_mut(&command["user_id"].as_i64().unwrap())
                        .unwrap() -= amount;
                    *model
                        .get_mut(&command["data"]["user"].as_i64().unwrap())
                        .unwrap() += amount;
                }
                "rejected" => {
                    assert_eq!(result["code"], "insufficient_balance", "{result}");
                    rejected += 1;
                }
                other => panic!("status {other}"),
            }
        }
    }
    println!("{succeeded} succeeded, {rejected} rejected");
    assert_eq!(succeeded + rejected, TRANSFERS);
    assert!(
        succeeded > TRANSFERS / 2,
        "the test should move money: {succeeded}"
    );

    for user in 1..=WALLETS {
        let balance = env.balance(user).await;
        assert!(balance >= 0);
        assert_eq!(balance, model[&user], "wallet {user}");
    }
    let total: i64 = env.count("SELECT sum(balance)::bigint FROM wallets").await;
    assert_eq!(total, WALLETS * FUNDING);
    assert_eq!(
        env.count("SELECT count(*) FROM commands").await,
        TRANSFERS as i64
    );
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders").await,
        2 * succeeded as i64
    );
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}
