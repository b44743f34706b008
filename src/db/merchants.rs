//! Sub-merchants with the money at Ping++: `sub_merchants` (a user's Ping++ sub-app),
//! `merchant_applications` (the applications that open it; never their fields) and
//! `merchant_settle_accounts`. Ping++'s objects are kept masked.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::merchant::{ApplicationStatus, Kind};
use crate::error::EngineError;

#[derive(Debug, Clone)]
pub struct SubMerchant {
    pub user_id: i64,
    pub command_id: String,
    pub fingerprint: Vec<u8>,
    pub pingpp_user_id: String,
    pub sub_app_id: Option<String>,
    pub sub_app: Option<Value>,
}

const SUB_MERCHANT: &str = "user_id, command_id, fingerprint, pingpp_user_id, sub_app_id, sub_app";

fn sub_merchant(row: &tokio_postgres::Row) -> SubMerchant {
    SubMerchant {
        user_id: row.get("user_id"),
        command_id: row.get("command_id"),
        fingerprint: row.get("fingerprint"),
        pingpp_user_id: row.get("pingpp_user_id"),
        sub_app_id: row.get("sub_app_id"),
        sub_app: row.get("sub_app"),
    }
}

pub async fn of_user(
    tx: &Transaction<'_>,
    user_id: i64,
) -> Result<Option<SubMerchant>, EngineError> {
    let sql = format!("SELECT {SUB_MERCHANT} FROM sub_merchants WHERE user_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&user_id])
        .await?;
    Ok(row.as_ref().map(sub_merchant))
}

pub async fn of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<SubMerchant>, EngineError> {
    let sql = format!("SELECT {SUB_MERCHANT} FROM sub_merchants WHERE command_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&command_id])
        .await?;
    Ok(row.as_ref().map(sub_merchant))
}

pub async fn insert(
    tx: &Transaction<'_>,
    user_id: i64,
    command_id: &str,
    fingerprint: &[u8],
    pingpp_user_id: &str,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO sub_merchants (user_id, command_id, fingerprint, pingpp_user_id)
             VALUES ($1, $2, $3, $4)",
        )
        .await?,
        &[&user_id, &command_id, &fingerprint, &pingpp_user_id],
    )
    .await?;
    Ok(())
}

pub async fn record_sub_app(
    tx: &Transaction<'_>,
    user_id: i64,
    sub_app_id: &str,
    sub_app: &Value,
) -> Result<(), EngineError> {
    let updated = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE sub_merchants SET sub_app_id = $2, sub_app = $3, updated_at = now()
                 WHERE user_id = $1 AND (sub_app_id IS NULL OR sub_app_id = $2)",
            )
            .await?,
            &[&user_id, &sub_app_id, sub_app],
        )
        .await?;
    if updated != 1 {
        return Err(EngineError::Broken(format!(
            "user {user_id} has another sub-app than {sub_app_id}"
        )));
    }
    Ok(())
}

/// A sub-merchant whose creation Ping++ refused: gone, so the user may try again.
pub async fn forget(tx: &Transaction<'_>, user_id: i64) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("DELETE FROM sub_merchants WHERE user_id = $1 AND sub_app_id IS NULL")
            .await?,
        &[&user_id],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Application {
    pub id: i64,
    pub user_id: i64,
    pub fingerprint: Vec<u8>,
    pub kind: Kind,
    pub order_no: String,
    pub status: ApplicationStatus,
    pub application_id: Option<String>,
    pub application: Option<Value>,
}

const APPLICATION: &str =
    "id, user_id, fingerprint, kind, order_no, status, application_id, application";

fn application(row: &tokio_postgres::Row) -> Result<Application, EngineError> {
    let kind: &str = row.get("kind");
    let status: &str = row.get("status");
    Ok(Application {
        id: row.get("id"),
        user_id: row.get("user_id"),
        fingerprint: row.get("fingerprint"),
        kind: Kind::parse(kind)
            .ok_or_else(|| EngineError::Broken(format!("a merchant application of kind {kind}")))?,
        order_no: row.get("order_no"),
        status: ApplicationStatus::parse(status).ok_or_else(|| {
            EngineError::Broken(format!("a merchant application with status {status}"))
        })?,
        application_id: row.get("application_id"),
        application: row.get("application"),
    })
}

pub async fn application_of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<Application>, EngineError> {
    let sql = format!("SELECT {APPLICATION} FROM merchant_applications WHERE command_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&command_id])
        .await?;
    row.as_ref().map(application).transpose()
}

/// The user's latest application, locked (two applications of one user take turns).
pub async fn latest_application(
    tx: &Transaction<'_>,
    user_id: i64,
) -> Result<Option<Application>, EngineError> {
    let sql = format!(
        "SELECT {APPLICATION} FROM merchant_applications WHERE user_id = $1
         ORDER BY id DESC LIMIT 1 FOR UPDATE"
    );
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&user_id])
        .await?;
    row.as_ref().map(application).transpose()
}

/// The application Ping++ knows as `application_id` or `order_no`, locked.
pub async fn application_at_pingpp(
    tx: &Transaction<'_>,
    application_id: &str,
    order_no: &str,
) -> Result<Option<Application>, EngineError> {
    let sql = format!(
        "SELECT {APPLICATION} FROM merchant_applications
         WHERE application_id = $1 OR order_no = $2 LIMIT 1 FOR UPDATE"
    );
    let row = tx
        .query_opt(
            &tx.prepare_cached(&sql).await?,
            &[&application_id, &order_no],
        )
        .await?;
    row.as_ref().map(application).transpose()
}

/// Every application of the user, oldest first.
pub async fn applications_of(
    tx: &Transaction<'_>,
    user_id: i64,
) -> Result<Vec<Application>, EngineError> {
    let sql =
        format!("SELECT {APPLICATION} FROM merchant_applications WHERE user_id = $1 ORDER BY id");
    let rows = tx
        .query(&tx.prepare_cached(&sql).await?, &[&user_id])
        .await?;
    rows.iter().map(application).collect()
}

pub async fn next_application_id(tx: &Transaction<'_>) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT nextval(pg_get_serial_sequence('merchant_applications', 'id'))",
            )
            .await?,
            &[],
        )
        .await?
        .get(0))
}

pub struct NewApplication<'a> {
    pub id: i64,
    pub user_id: i64,
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub kind: Kind,
    pub order_no: &'a str,
}

pub async fn insert_application(
    tx: &Transaction<'_>,
    new: &NewApplication<'_>,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO merchant_applications (id, user_id, command_id, fingerprint, kind, order_no)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?,
        &[
            &new.id,
            &new.user_id,
            &new.command_id,
            &new.fingerprint,
            &new.kind.as_str(),
            &new.order_no,
        ],
    )
    .await?;
    Ok(())
}

/// Records an application's status, and what Ping++ says of it when it said anything. A
/// decided application never goes back to pending (an answer read before a webhook recorded
/// the decision may arrive after it).
pub async fn record_application(
    tx: &Transaction<'_>,
    id: i64,
    status: ApplicationStatus,
    application: Option<(&str, &Value)>,
) -> Result<(), EngineError> {
    let (application_id, object) = match application {
        Some((id, object)) => (Some(id), Some(object)),
        None => (None, None),
    };
    tx.execute(
        &tx.prepare_cached(
            "UPDATE merchant_applications SET
                 status = CASE WHEN status IN ('completed', 'failed') AND $2 = 'pending'
                               THEN status ELSE $2 END,
                 application_id = COALESCE($3, application_id),
                 application = CASE WHEN status IN ('completed', 'failed') AND $2 = 'pending'
                                    THEN application ELSE COALESCE($4, application) END,
                 updated_at = now()
             WHERE id = $1",
        )
        .await?,
        &[&id, &status.as_str(), &application_id, &object],
    )
    .await?;
    Ok(())
}

/// The application may have reached Ping++ and its answer was lost: unknown, unless Ping++'s
/// webhook told meanwhile what became of it.
pub async fn mark_unknown(tx: &Transaction<'_>, id: i64) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE merchant_applications SET status = 'unknown', updated_at = now()
             WHERE id = $1 AND status IN ('sending', 'unsent')",
        )
        .await?,
        &[&id],
    )
    .await?;
    Ok(())
}

/// The application certainly never reached Ping++: it may be sent again (only while it is
/// still being sent: a twin may have decided its outcome meanwhile).
pub async fn mark_unsent(tx: &Transaction<'_>, id: i64) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE merchant_applications SET status = 'unsent', updated_at = now()
             WHERE id = $1 AND status = 'sending'",
        )
        .await?,
        &[&id],
    )
    .await?;
    Ok(())
}

pub async fn insert_settle_account(
    tx: &Transaction<'_>,
    user_id: i64,
    command_id: &str,
    settle_account_id: &str,
    settle_account: &Value,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO merchant_settle_accounts
                 (user_id, command_id, settle_account_id, settle_account)
             VALUES ($1, $2, $3, $4)",
        )
        .await?,
        &[&user_id, &command_id, &settle_account_id, settle_account],
    )
    .await?;
    Ok(())
}
