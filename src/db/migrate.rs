//! Applies migrations/ in order, each in its own transaction, under an advisory lock so several
//! instances starting together apply each file once. A file changed after it was applied is
//! refused rather than silently skipped.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every file of migrations/, embedded so the binary carries its own schema. Versions rise but
/// may skip a number, so work on separate branches can each take one without renumbering.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_ledger.sql",
        sql: include_str!("../../migrations/0001_ledger.sql"),
    },
    Migration {
        version: 2,
        name: "0002_cashes_recharges.sql",
        sql: include_str!("../../migrations/0002_cashes_recharges.sql"),
    },
    Migration {
        version: 3,
        name: "0003_pingpp_events.sql",
        sql: include_str!("../../migrations/0003_pingpp_events.sql"),
    },
    Migration {
        version: 4,
        name: "0004_recharge_objects.sql",
        sql: include_str!("../../migrations/0004_recharge_objects.sql"),
    },
    Migration {
        version: 5,
        name: "0005_cash_withdrawals.sql",
        sql: include_str!("../../migrations/0005_cash_withdrawals.sql"),
    },
    Migration {
        version: 6,
        name: "0006_waiting_events.sql",
        sql: include_str!("../../migrations/0006_waiting_events.sql"),
    },
    Migration {
        version: 7,
        name: "0007_custody.sql",
        sql: include_str!("../../migrations/0007_custody.sql"),
    },
    Migration {
        version: 8,
        name: "0008_charge_records.sql",
        sql: include_str!("../../migrations/0008_charge_records.sql"),
    },
    Migration {
        version: 9,
        name: "0009_merchants.sql",
        sql: include_str!("../../migrations/0009_merchants.sql"),
    },
    Migration {
        version: 10,
        name: "0010_orders.sql",
        sql: include_str!("../../migrations/0010_orders.sql"),
    },
    Migration {
        version: 11,
        name: "0011_allocations.sql",
        sql: include_str!("../../migrations/0011_allocations.sql"),
    },
    Migration {
        version: 12,
        name: "0012_audit_and_retention.sql",
        sql: include_str!("../../migrations/0012_audit_and_retention.sql"),
    },
    Migration {
        version: 13,
        name: "0013_lean_ledger.sql",
        sql: include_str!("../../migrations/0013_lean_ledger.sql"),
    },
    Migration {
        version: 14,
        name: "0014_cash_approvals.sql",
        sql: include_str!("../../migrations/0014_cash_approvals.sql"),
    },
    Migration {
        version: 15,
        name: "0015_dead_letter_discards.sql",
        sql: include_str!("../../migrations/0015_dead_letter_discards.sql"),
    },
    Migration {
        version: 16,
        name: "0016_holds.sql",
        sql: include_str!("../../migrations/0016_holds.sql"),
    },
    Migration {
        version: 17,
        name: "0017_redpackets.sql",
        sql: include_str!("../../migrations/0017_redpackets.sql"),
    },
    Migration {
        version: 18,
        name: "0018_refunds.sql",
        sql: include_str!("../../migrations/0018_refunds.sql"),
    },
    Migration {
        version: 19,
        name: "0019_limits_and_freezes.sql",
        sql: include_str!("../../migrations/0019_limits_and_freezes.sql"),
    },
    Migration {
        version: 20,
        name: "0020_wallet_versions.sql",
        sql: include_str!("../../migrations/0020_wallet_versions.sql"),
    },
    Migration {
        version: 21,
        name: "0021_hash_chains.sql",
        sql: include_str!("../../migrations/0021_hash_chains.sql"),
    },
    Migration {
        version: 22,
        name: "0022_wallet_changed.sql",
        sql: include_str!("../../migrations/0022_wallet_changed.sql"),
    },
    Migration {
        version: 23,
        name: "0023_wallet_statements.sql",
        sql: include_str!("../../migrations/0023_wallet_statements.sql"),
    },
];

/// An arbitrary constant shared by every pluspay instance.
const MIGRATION_LOCK_KEY: i64 = 0x0070_6c75_7370_6179;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {name} was changed after it was applied (checksum differs)")]
    Changed { name: String },
    #[error("database error while migrating: {0}")]
    Db(#[from] tokio_postgres::Error),
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Returns the names of the migrations applied by this call.
pub async fn migrate(client: &mut Client) -> Result<Vec<&'static str>, MigrateError> {
    // Under the lock too: two concurrent CREATE TABLE IF NOT EXISTS can both miss the table and
    // then collide on its row type.
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    tx.commit().await?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        let existing = tx
            .query_opt(
                "SELECT checksum FROM schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await?;
        let sum = checksum(migration.sql);
        match existing {
            Some(row) if row.get::<_, String>(0) == sum => continue,
            Some(_) => {
                return Err(MigrateError::Changed {
                    name: migration.name.to_owned(),
                })
            }
            None => {}
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &sum],
        )
        .await?;
        tx.commit().await?;
        applied.push(migration.name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert!(
                i == 0 || m.version > MIGRATIONS[i - 1].version,
                "{}",
                m.name
            );
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }
}
