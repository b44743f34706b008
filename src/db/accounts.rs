//! The users' e-wallets at Ping++: their Ping++ users (`ewallet_users`) and personal account
//! applications (`cus_applications`). Only masked personal data reaches these tables.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::account::ApplicationStatus;
use crate::error::EngineError;

/// An application as recorded.
#[derive(Debug, Clone)]
pub struct Application {
    pub id: i64,
    pub user_id: i64,
    pub command_id: String,
    pub fingerprint: Vec<u8>,
    pub order_no: String,
    pub status: ApplicationStatus,
    pub application_id: Option<String>,
    pub application: Option<Value>,
}

fn application(row: &tokio_postgres::Row) -> Result<Application, EngineError> {
    let status: &str = row.get("status");
    Ok(Application {
        id: row.get("id"),
        user_id: row.get("user_id"),
        command_id: row.get("command_id"),
        fingerprint: row.get("fingerprint"),
        order_no: row.get("order_no"),
        status: ApplicationStatus::parse(status)
            .ok_or_else(|| EngineError::Broken(format!("an application with status {status}")))?,
        application_id: row.get("application_id"),
        application: row.get("application"),
    })
}

const COLUMNS: &str =
    "id, user_id, command_id, fingerprint, order_no, status, application_id, application";

pub async fn application_of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<Application>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM cus_applications WHERE command_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&command_id])
        .await?;
    row.as_ref().map(application).transpose()
}

/// The user's latest application, locked (so two opens of one user take turns).
pub async fn latest_application(
    tx: &Transaction<'_>,
    user_id: i64,
) -> Result<Option<Application>, EngineError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM cus_applications WHERE user_id = $1
         ORDER BY id DESC LIMIT 1 FOR UPDATE"
    );
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&user_id])
        .await?;
    row.as_ref().map(application).transpose()
}

pub async fn application_by_pingpp_id(
    tx: &Transaction<'_>,
    application_id: &str,
) -> Result<Option<Application>, EngineError> {
    let sql =
        format!("SELECT {COLUMNS} FROM cus_applications WHERE application_id = $1 FOR UPDATE");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&application_id])
        .await?;
    row.as_ref().map(application).transpose()
}

pub async fn application_by_order_no(
    tx: &Transaction<'_>,
    order_no: &str,
) -> Result<Option<Application>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM cus_applications WHERE order_no = $1 FOR UPDATE");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&order_no])
        .await?;
    row.as_ref().map(application).transpose()
}

/// The id the next application will have (its `order_no` is made of it).
pub async fn next_application_id(tx: &Transaction<'_>) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT nextval(pg_get_serial_sequence('cus_applications', 'id'))")
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
    pub order_no: &'a str,
}

pub async fn insert_application(
    tx: &Transaction<'_>,
    new: &NewApplication<'_>,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO cus_applications (id, user_id, command_id, fingerprint, order_no)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5)",
        )
        .await?,
        &[
            &new.id,
            &new.user_id,
            &new.command_id,
            &new.fingerprint,
            &new.order_no,
        ],
    )
    .await?;
    Ok(())
}

/// Records what Ping++ says of an application (masked); `application` is `None` when Ping++
/// refused to take it. A decided application never goes back to pending: an answer read
/// before a webhook recorded the decision may arrive after it.
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
            "UPDATE cus_applications SET
                 status = CASE WHEN status <> 'pending' AND $2 = 'pending' THEN status ELSE $2 END,
                 application_id = COALESCE($3, application_id),
                 application = CASE WHEN status <> 'pending' AND $2 = 'pending' THEN application
                                    ELSE COALESCE($4, application) END,
                 updated_at = now()
             WHERE id = $1",
        )
        .await?,
        &[&id, &status.as_str(), &application_id, &object],
    )
    .await?;
    Ok(())
}

/// The Ping++ user of `user_id`, as last recorded.
pub async fn pingpp_user(tx: &Transaction<'_>, user_id: i64) -> Result<Option<Value>, EngineError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached("SELECT pingpp_user FROM ewallet_users WHERE user_id = $1")
                .await?,
            &[&user_id],
        )
        .await?
        .map(|row| row.get(0)))
}

pub async fn record_pingpp_user(
    tx: &Transaction<'_>,
    user_id: i64,
    pingpp_user_id: &str,
    object: &Value,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO ewallet_users (user_id, pingpp_user_id, pingpp_user) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET pingpp_user = $3, updated_at = now()",
        )
        .await?,
        &[&user_id, &pingpp_user_id, object],
    )
    .await?;
    Ok(())
}
