//! The user's e-wallet at Ping++ (`wallet.custody = "pingpp"`): `account.open`, `account.get`,
//! `account.cards`, and the onboarding helpers `upload_pic` and `card_bin`.
//!
//! `account.open` makes at most one Ping++ user and one application per command, with a
//! recovery point (the `cus_applications` row, its `order_no`) before anything is sent:
//!
//! 1. One transaction checks the user may apply (none pending, none succeeded) and records the
//!    application's `order_no`. Nothing personal is recorded: a retry sends the fields again
//!    from the redelivered command, whose keyed fingerprint must be the one recorded.
//! 2. The Ping++ user is created (one that exists already is fetched instead) and recorded.
//! 3. The application is sent. The document says a timed-out application is retried with the
//!    same `order_no` and content, so every retry does exactly that. One transaction records
//!    what Ping++ answered (masked) and stores the result.
//!
//! The others change nothing at Ping++ that a repeat could double: they ask, then answer.

use serde_json::{json, Value};

use crate::db::accounts::{self, Application, NewApplication};
use crate::db::commands::{conflict, Applied};
use crate::db::ledger;
use crate::domain::account::{self, ApplicationStatus};
use crate::domain::command::Envelope;
use crate::domain::outcome::Rejection;
use crate::domain::recharge_object::pingpp_user;
use crate::engine::provider::{self, unix_now};
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{CusApplicationRequest, PingppError};

/// The Ping++ user id of one of our users.
pub(crate) fn pingpp_id(engine: &Engine, user: i64) -> String {
    pingpp_user(&engine.user_id_template, user)
}

/// The user's latest application status, from a fresh transaction (for the commands that only
/// need to know whether the e-wallet is open).
pub(crate) async fn require_open(
    engine: &Engine,
    user: i64,
) -> Result<Result<(), Rejection>, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let latest = accounts::latest_application(&tx, user).await?;
    tx.rollback().await?;
    Ok(account::require_open(latest.map(|a| a.status)))
}

pub(crate) async fn open(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let request = match account::parse_open(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    // Step 1.
    let recorded = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        match accounts::application_of_command(&tx, &envelope.id).await? {
            Some(recorded) => {
                tx.rollback().await?;
                if recorded.fingerprint != envelope.fingerprint() {
                    return Ok(conflict(envelope));
                }
                recorded
            }
            None => {
                let latest = accounts::latest_application(&tx, envelope.user_id).await?;
                if let Err(rejection) = account::may_apply(latest.map(|a| a.status)) {
                    return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
                }
                let id = accounts::next_application_id(&tx).await?;
                let order_no = account::application_order_no(id);
                let fingerprint = envelope.fingerprint();
                accounts::insert_application(
                    &tx,
                    &NewApplication {
                        id,
                        user_id: envelope.user_id,
                        command_id: &envelope.id,
                        fingerprint: &fingerprint,
                        order_no: &order_no,
                    },
                )
                .await?;
                tx.commit().await?;
                Application {
                    id,
                    user_id: envelope.user_id,
                    command_id: envelope.id.clone(),
                    fingerprint: fingerprint.to_vec(),
                    order_no,
                    status: ApplicationStatus::Pending,
                    application_id: None,
                    application: None,
                }
            }
        }
    };
    // Step 2.
    let user = match ensure_pingpp_user(engine, envelope.user_id).await? {
        Ok(user) => user,
        Err(rejection) => return give_up_application(engine, envelope, &recorded, rejection).await,
    };
    // Step 3.
    let client = provider::client(engine)?;
    let application_request = CusApplicationRequest {
        user: pingpp_id(engine, envelope.user_id),
        order_no: recorded.order_no.clone(),
        cert_type: request.cert_type,
        cert_name: request.cert_name,
        cert_number: request.cert_number,
        mobile: request.mobile,
    };
    let application = match client.create_cus_application(&application_request).await {
        Ok(application) => provider::masked(application),
        Err(error) if provider::refuses_used_order_no(&error) => {
            // The document has a timed-out application retried with its order_no, so Ping++
            // should answer a repeat with the application; refused as used instead, it was
            // made by an attempt whose answer was lost, and no list can show it. It stays
            // pending: its webhook (found by order_no) decides it.
            let rejection = provider::outcome_unknown_rejection(
                "create_cus_application",
                &recorded.order_no,
                provider::MSG_OUTCOME_UNKNOWN,
            );
            let mut client = engine.pool.get().await?;
            let tx = client.transaction().await?;
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
        Err(error) => {
            let mut rejection = provider::refused_or_retry(error)?;
            let personal = [
                application_request.cert_name.as_str(),
                application_request.cert_number.as_str(),
                application_request.mobile.as_str(),
            ];
            account::scrub_rejection(&mut rejection, &personal);
            return give_up_application(engine, envelope, &recorded, rejection).await;
        }
    };
    let application_id = provider::field(&application, "id")?.to_owned();
    let status = ApplicationStatus::from_pingpp(provider::field(&application, "status")?);
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    accounts::record_application(
        &tx,
        recorded.id,
        status,
        Some((&application_id, &application)),
    )
    .await?;
    let result = succeeded(
        envelope,
        Some(account::MSG_APPLIED),
        json!({ "user": user, "cus_application": application }),
    );
    step::store_result(tx, envelope, &result).await
}

/// Ping++ refused the user or the application: it failed, and the user may apply again.
async fn give_up_application(
    engine: &Engine,
    envelope: &Envelope,
    recorded: &Application,
    rejection: Rejection,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    accounts::record_application(&tx, recorded.id, ApplicationStatus::Failed, None).await?;
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}

/// The user's Ping++ user: as recorded, or created now (fetched, when it exists already).
async fn ensure_pingpp_user(
    engine: &Engine,
    user_id: i64,
) -> Result<Result<Value, Rejection>, EngineError> {
    {
        let mut client = engine.pool.get().await?;
        let tx = client.transaction().await?;
        let recorded = accounts::pingpp_user(&tx, user_id).await?;
        tx.rollback().await?;
        if let Some(user) = recorded {
            return Ok(Ok(user));
        }
    }
    let client = provider::client(engine)?;
    let id = pingpp_id(engine, user_id);
    let user = match client.create_user(&id).await {
        Ok(user) => user,
        Err(error) => {
            let Some(rejection) = provider::rejection(&error) else {
                return Err(provider::failure(error));
            };
            // Made by an earlier attempt whose answer was lost, or before pluspay: fetch it.
            match client.retrieve_user(&id).await {
                Ok(user) => user,
                Err(PingppError::Api { .. }) => return Ok(Err(rejection)),
                Err(error) => return Err(provider::failure(error)),
            }
        }
    };
    let user = provider::masked(user);
    let mut db = engine.pool.get().await?;
    let tx = db.transaction().await?;
    accounts::record_pingpp_user(&tx, user_id, &id, &user).await?;
    tx.commit().await?;
    Ok(Ok(user))
}

/// `account.get`: the Ping++ user and the latest application as Ping++ sees them now (each
/// recorded), and pluspay's ledger balance beside Ping++'s.
pub(crate) async fn get(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (known_user, latest) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let user = accounts::pingpp_user(&tx, envelope.user_id).await?;
        let latest = accounts::latest_application(&tx, envelope.user_id).await?;
        tx.rollback().await?;
        (user, latest)
    };
    let mut user = known_user;
    let mut application = latest.as_ref().and_then(|a| a.application.clone());
    if user.is_some() {
        let client = provider::client(engine)?;
        match client
            .retrieve_user(&pingpp_id(engine, envelope.user_id))
            .await
        {
            Ok(now) => user = Some(provider::masked(now)),
            Err(error) => {
                let rejection = provider::refused_or_retry(error)?;
                return step::refuse(engine, envelope, rejection).await;
            }
        }
        if let Some(Application {
            application_id: Some(id),
            status: ApplicationStatus::Pending,
            ..
        }) = &latest
        {
            match client.retrieve_cus_application(id).await {
                Ok(now) => application = Some(provider::masked(now)),
                Err(error) => {
                    let rejection = provider::refused_or_retry(error)?;
                    return step::refuse(engine, envelope, rejection).await;
                }
            }
        }
    }
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    if let Some(user) = &user {
        let id = pingpp_id(engine, envelope.user_id);
        accounts::record_pingpp_user(&tx, envelope.user_id, &id, user).await?;
    }
    if let (Some(latest), Some(object)) = (&latest, &application) {
        if let Some(id) = &latest.application_id {
            let status = ApplicationStatus::from_pingpp(provider::field(object, "status")?);
            accounts::record_application(&tx, latest.id, status, Some((id, object))).await?;
        }
    }
    let ledger_balance = ledger::summary(&tx, envelope.user_id).await?.balance;
    let difference = user
        .as_ref()
        .and_then(|u| u.get("available_balance"))
        .and_then(Value::as_i64)
        .map(|at_pingpp| ledger_balance - at_pingpp);
    if let Some(difference) = difference.filter(|d| *d != 0) {
        // A deposit or withdrawal Ping++ has settled and pluspay not yet (its event on the
        // way), or a record gone wrong: worth a look either way.
        tracing::warn!(
            user_id = envelope.user_id,
            difference,
            "the ledger and the user's Ping++ e-wallet differ"
        );
    }
    let result = succeeded(
        envelope,
        None,
        json!({
            "user": user,
            "cus_application": application,
            "ledger_balance": ledger_balance,
            "difference": difference,
        }),
    );
    step::store_result(tx, envelope, &result).await
}

/// `account.cards`: the link where the user binds or unbinds their bank cards.
pub(crate) async fn cards(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let return_url = match account::parse_return_url(&envelope.data) {
        Ok(url) => url,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    if let Err(rejection) = require_open(engine, envelope.user_id).await? {
        return step::refuse(engine, envelope, rejection).await;
    }
    let asked = provider::client(engine)?
        .card_link(&pingpp_id(engine, envelope.user_id), &return_url)
        .await;
    let link = match asked {
        Ok(link) => link,
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    let data = json!({
        "card_url": provider::field(&link, "card_url")?,
        "expires_at": unix_now() + account::CARD_URL_LIFETIME_SECS,
    });
    step::answer(engine, envelope, succeeded(envelope, None, data)).await
}

/// `upload_pic`: a picture for the merchant applications, as Ping++'s `media_url`.
pub(crate) async fn upload_pic(
    engine: &Engine,
    envelope: &Envelope,
) -> Result<Applied, EngineError> {
    let pic = match account::parse_pic(&envelope.data, engine.policy.pic_max_bytes) {
        Ok(pic) => pic,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let uploaded = match provider::client(engine)?.upload_pic(&pic).await {
        Ok(uploaded) => uploaded,
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    let data = json!({ "media_url": provider::field(&uploaded, "media_url")? });
    step::answer(engine, envelope, succeeded(envelope, None, data)).await
}

/// `card_bin`: the type and bank of a card number.
pub(crate) async fn card_bin(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let number = match account::parse_card_number(&envelope.data) {
        Ok(number) => number,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let found = match provider::client(engine)?.card_bin(&number).await {
        Ok(found) => found,
        Err(error) => {
            let mut rejection = provider::refused_or_retry(error)?;
            account::scrub_rejection(&mut rejection, &[number.as_str()]);
            return step::refuse(engine, envelope, rejection).await;
        }
    };
    let data = json!({
        "card_type": provider::field(&found, "card_type")?,
        "bank_name": provider::field(&found, "bank_name")?,
        "bank_code": provider::field(&found, "bank_code")?,
    });
    step::answer(engine, envelope, succeeded(envelope, None, data)).await
}
