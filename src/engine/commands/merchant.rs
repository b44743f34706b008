//! Sub-merchants with the money at Ping++ (`wallet.custody = "pingpp"`): `merchant.create`,
//! `merchant.get`, `merchant.apply`, `merchant.application.get`, `merchant.settle_account`.
//!
//! `merchant.create` makes one Ping++ sub-app per user, with its business user
//! (`pingpp.merchant_user_id_template`). Its row (`sub_merchants`) is recorded first; every
//! attempt then asks Ping++ whether the business user exists and names a sub-app (`related_app`)
//! before creating one, so a lost answer or a crash never makes a second.
//!
//! `merchant.apply` is sent at most once: the document forbids sending an application again
//! with its `order_no` (该接口不支持使用原订单号重试). Its row is recorded as `sending` before the
//! request leaves; a failure that certainly never reached Ping++ (refused, no connection, rate
//! limited) may be sent again, but once Ping++ may have acted and no answer says what it did
//! (a timeout, a 5xx, a crash while sending), the command is answered
//! `provider_outcome_unknown` and nothing is resent: an operator finds out at Ping++, and a new
//! command (a new application, a new `order_no`) applies again.

use serde_json::{json, Value};

use crate::db::commands::{conflict, Applied};
use crate::db::merchants::{self, Application, NewApplication, SubMerchant};
use crate::domain::command::Envelope;
use crate::domain::merchant::{self, ApplicationStatus, Kind};
use crate::domain::outcome::{Code, Rejection};
use crate::domain::recharge_object::pingpp_user;
use crate::engine::provider;
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{
    MerchantApplicationRequest, MerchantKind, PingppError, SentOnceError, SettleAccountRequest,
    SubAppRequest,
};

fn pingpp_kind(kind: Kind) -> MerchantKind {
    match kind {
        Kind::Enterprise => MerchantKind::Enterprise,
        Kind::Micro => MerchantKind::Micro,
    }
}

pub(crate) async fn create(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let request = match merchant::parse_create(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    let recorded = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        if let Some(recorded) = merchants::of_command(&tx, &envelope.id).await? {
            tx.rollback().await?;
            if recorded.fingerprint != envelope.fingerprint() {
                return Ok(conflict(envelope));
            }
            recorded
        } else if merchants::of_user(&tx, envelope.user_id).await?.is_some() {
            let rejection = Rejection::field(
                Code::AlreadyAMerchant,
                "user_id",
                merchant::MSG_ALREADY_A_MERCHANT,
            );
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        } else {
            let id = pingpp_user(&engine.merchant_user_id_template, envelope.user_id);
            let fingerprint = envelope.fingerprint();
            merchants::insert(&tx, envelope.user_id, &envelope.id, &fingerprint, &id).await?;
            tx.commit().await?;
            SubMerchant {
                user_id: envelope.user_id,
                command_id: envelope.id.clone(),
                fingerprint: fingerprint.to_vec(),
                pingpp_user_id: id,
                sub_app_id: None,
                sub_app: None,
            }
        }
    };
    let client = provider::client(engine)?;
    let sub_app = match made_sub_app(engine, &recorded.pingpp_user_id).await? {
        Some(sub_app) => sub_app,
        None => {
            let asked = SubAppRequest {
                display_name: request.display_name,
                user: recorded.pingpp_user_id.clone(),
                description: request.description,
                metadata: request.metadata,
            };
            match client.create_sub_app(&asked).await {
                Ok(sub_app) => sub_app,
                Err(error) => {
                    let rejection = provider::refused_or_retry(error)?;
                    // Refused: perhaps because an earlier attempt made it after all.
                    match made_sub_app(engine, &recorded.pingpp_user_id).await? {
                        Some(sub_app) => sub_app,
                        None => return give_up_create(engine, envelope, rejection).await,
                    }
                }
            }
        }
    };
    let sub_app = provider::masked(sub_app);
    let sub_app_id = provider::field(&sub_app, "id")?.to_owned();
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    merchants::record_sub_app(&tx, envelope.user_id, &sub_app_id, &sub_app).await?;
    let result = succeeded(
        envelope,
        Some(merchant::MSG_CREATED),
        json!({ "sub_app": sub_app }),
    );
    step::store_result(tx, envelope, &result).await
}

/// The sub-app Ping++ made for this business user, if any: the user names it (`related_app`).
async fn made_sub_app(engine: &Engine, business_user: &str) -> Result<Option<Value>, EngineError> {
    let client = provider::client(engine)?;
    let user = match client.retrieve_user(business_user).await {
        Ok(user) => user,
        // No such user: no sub-app was made for it.
        Err(PingppError::Api { status: 404, .. }) => return Ok(None),
        Err(error) => {
            return Err(match provider::rejection(&error) {
                Some(_) => EngineError::Broken(format!(
                    "Ping++ refused to show business user {business_user}: {error}"
                )),
                None => provider::failure(error),
            })
        }
    };
    let Some(sub_app_id) = user.get("related_app").and_then(Value::as_str) else {
        return Ok(None);
    };
    client
        .retrieve_sub_app(sub_app_id)
        .await
        .map(Some)
        .map_err(provider::failure)
}

async fn give_up_create(
    engine: &Engine,
    envelope: &Envelope,
    rejection: Rejection,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    merchants::forget(&tx, envelope.user_id).await?;
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}

/// The user's sub-merchant with its sub-app, or why the command can't go on.
fn made(found: Option<SubMerchant>) -> Result<(SubMerchant, String), Rejection> {
    match found {
        Some(found) => match found.sub_app_id.clone() {
            Some(id) => Ok((found, id)),
            None => Err(merchant::not_a_merchant()),
        },
        None => Err(merchant::not_a_merchant()),
    }
}

/// An application as results show it: Ping++'s object, or what pluspay knows without one.
fn application_json(application: &Application) -> Value {
    match &application.application {
        Some(object) => {
            let mut object = object.clone();
            // pluspay's word where Ping++'s is stale: an unknown outcome, a refusal unsent.
            if application.status == ApplicationStatus::Unknown {
                object["status"] = json!(application.status.as_str());
            }
            object
        }
        None => json!({
            "object": pingpp_kind(application.kind).object(),
            "order_no": application.order_no,
            "status": application.status.as_str(),
        }),
    }
}

pub(crate) async fn get(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (sub_app_id, applications) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let found = merchants::of_user(&tx, envelope.user_id).await?;
        let (_, sub_app_id) = match made(found) {
            Ok(made) => made,
            Err(rejection) => {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await
            }
        };
        let applications = merchants::applications_of(&tx, envelope.user_id).await?;
        tx.rollback().await?;
        (sub_app_id, applications)
    };
    let client = provider::client(engine)?;
    let sub_app = match client.retrieve_sub_app(&sub_app_id).await {
        Ok(sub_app) => provider::masked(sub_app),
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    let mut refreshed = Vec::new();
    for application in &applications {
        if let (ApplicationStatus::Pending, Some(id)) =
            (application.status, &application.application_id)
        {
            let now = client
                .retrieve_merchant_application(pingpp_kind(application.kind), id)
                .await;
            match now {
                Ok(now) => refreshed.push((application.id, id.clone(), provider::masked(now))),
                Err(error) => {
                    return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
                }
            }
        }
    }
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    merchants::record_sub_app(&tx, envelope.user_id, &sub_app_id, &sub_app).await?;
    for (id, application_id, object) in &refreshed {
        let status = ApplicationStatus::from_pingpp(provider::field(object, "status")?);
        merchants::record_application(&tx, *id, status, Some((application_id, object))).await?;
    }
    let applications = merchants::applications_of(&tx, envelope.user_id).await?;
    let result = succeeded(
        envelope,
        None,
        json!({
            "sub_app": sub_app,
            "applications": applications.iter().map(application_json).collect::<Vec<_>>(),
        }),
    );
    step::store_result(tx, envelope, &result).await
}

pub(crate) async fn apply(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let request = match merchant::parse_apply(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    let (recorded, business_user) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let found = merchants::of_user(&tx, envelope.user_id).await?;
        let (sub_merchant, _) = match made(found) {
            Ok(made) => made,
            Err(rejection) => {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await
            }
        };
        match merchants::application_of_command(&tx, &envelope.id).await? {
            Some(recorded) => {
                if recorded.fingerprint != envelope.fingerprint() {
                    tx.rollback().await?;
                    return Ok(conflict(envelope));
                }
                match recorded.status {
                    // It may be on its way to Ping++, or there already: never sent again.
                    ApplicationStatus::Sending => {
                        let rejection = outcome_unknown(&tx, &recorded).await?;
                        return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
                    }
                    ApplicationStatus::Unsent => {
                        merchants::record_application(
                            &tx,
                            recorded.id,
                            ApplicationStatus::Sending,
                            None,
                        )
                        .await?;
                        tx.commit().await?;
                    }
                    _ => {
                        return Err(EngineError::Broken(format!(
                            "merchant application {} is {} without a stored result",
                            recorded.id,
                            recorded.status.as_str()
                        )))
                    }
                }
                (recorded, sub_merchant.pingpp_user_id)
            }
            None => {
                let latest = merchants::latest_application(&tx, envelope.user_id).await?;
                if let Err(rejection) = merchant::may_apply(latest.map(|a| a.status)) {
                    return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
                }
                let id = merchants::next_application_id(&tx).await?;
                let order_no = merchant::application_order_no(id);
                let fingerprint = envelope.fingerprint();
                merchants::insert_application(
                    &tx,
                    &NewApplication {
                        id,
                        user_id: envelope.user_id,
                        command_id: &envelope.id,
                        fingerprint: &fingerprint,
                        kind: request.kind,
                        order_no: &order_no,
                    },
                )
                .await?;
                tx.commit().await?;
                let recorded = Application {
                    id,
                    user_id: envelope.user_id,
                    fingerprint: fingerprint.to_vec(),
                    kind: request.kind,
                    order_no,
                    status: ApplicationStatus::Sending,
                    application_id: None,
                    application: None,
                };
                (recorded, sub_merchant.pingpp_user_id)
            }
        }
    };
    // What a refusal might quote back: every text of the application.
    let texts: Vec<String> = request
        .fields
        .values()
        .flat_map(|v| match v {
            Value::Object(group) => group.values().cloned().collect::<Vec<_>>(),
            other => vec![other.clone()],
        })
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let personal: Vec<&str> = texts.iter().map(String::as_str).collect();
    let asked = MerchantApplicationRequest {
        kind: pingpp_kind(request.kind),
        user: business_user,
        order_no: recorded.order_no.clone(),
        fields: request.fields,
    };
    let sent = provider::client(engine)?
        .create_merchant_application(&asked)
        .await;
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let result = match sent {
        Ok(application) => {
            let application = provider::masked(application);
            let status = ApplicationStatus::from_pingpp(provider::field(&application, "status")?);
            let id = provider::field(&application, "id")?.to_owned();
            merchants::record_application(&tx, recorded.id, status, Some((&id, &application)))
                .await?;
            succeeded(
                envelope,
                Some(merchant::MSG_APPLIED),
                json!({ "application": application }),
            )
        }
        Err(SentOnceError {
            may_have_acted: true,
            ..
        }) => {
            // Its error is not logged: an answer's body may quote the application's fields.
            tracing::warn!(order_no = %recorded.order_no, "a merchant application may have reached Ping++");
            rejected(envelope, outcome_unknown(&tx, &recorded).await?)
        }
        Err(SentOnceError { error, .. }) => match provider::rejection(&error) {
            Some(mut rejection) => {
                crate::domain::account::scrub_rejection(&mut rejection, &personal);
                merchants::record_application(&tx, recorded.id, ApplicationStatus::Failed, None)
                    .await?;
                rejected(envelope, rejection)
            }
            // Never reached Ping++: it may go again, with its order_no, when the command is
            // tried again (this transaction claimed the id, so another records that, under the
            // id's lock).
            None => {
                tx.rollback().await?;
                let mut client = engine.pool.get().await?;
                let tx = client.transaction().await?;
                crate::db::commands::lock_id(&tx, &envelope.id).await?;
                merchants::mark_unsent(&tx, recorded.id).await?;
                tx.commit().await?;
                return Err(provider::failure(error));
            }
        },
    };
    step::store_result(tx, envelope, &result).await
}

/// The application may have reached Ping++ and may not be sent again: its outcome is unknown,
/// recorded so, and the command says so for good (an operator decides; a new command applies
/// again).
async fn outcome_unknown(
    tx: &deadpool_postgres::Transaction<'_>,
    recorded: &Application,
) -> Result<Rejection, EngineError> {
    merchants::mark_unknown(tx, recorded.id).await?;
    Ok(provider::outcome_unknown_rejection(
        "create_merchant_application",
        &recorded.order_no,
        merchant::MSG_OUTCOME_UNKNOWN,
    ))
}

pub(crate) async fn application_get(
    engine: &Engine,
    envelope: &Envelope,
) -> Result<Applied, EngineError> {
    let Some(application_id) = envelope
        .data
        .get("application")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .map(str::to_owned)
    else {
        let rejection = Rejection::field(
            Code::UnknownApplication,
            "application",
            merchant::MSG_UNKNOWN_APPLICATION,
        );
        return step::refuse(engine, envelope, rejection).await;
    };
    let recorded = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        match merchants::application_at_pingpp(&tx, &application_id, "").await? {
            Some(found) if found.user_id == envelope.user_id => {
                tx.rollback().await?;
                found
            }
            _ => {
                let rejection = Rejection::field(
                    Code::UnknownApplication,
                    "application",
                    merchant::MSG_UNKNOWN_APPLICATION,
                );
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
        }
    };
    let now = match provider::client(engine)?
        .retrieve_merchant_application(pingpp_kind(recorded.kind), &application_id)
        .await
    {
        Ok(now) => provider::masked(now),
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let status = ApplicationStatus::from_pingpp(provider::field(&now, "status")?);
    merchants::record_application(&tx, recorded.id, status, Some((&application_id, &now))).await?;
    let result = succeeded(envelope, None, json!({ "application": now }));
    step::store_result(tx, envelope, &result).await
}

pub(crate) async fn settle_account(
    engine: &Engine,
    envelope: &Envelope,
) -> Result<Applied, EngineError> {
    let (sub_app_id, recipient) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let found = merchants::of_user(&tx, envelope.user_id).await?;
        let (_, sub_app_id) = match made(found) {
            Ok(made) => made,
            Err(rejection) => {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await
            }
        };
        let latest = merchants::latest_application(&tx, envelope.user_id).await?;
        let Some(kind) = latest
            .filter(|a| a.status == ApplicationStatus::Completed)
            .map(|a| a.kind)
        else {
            let rejection =
                Rejection::field(Code::MerchantNotOpen, "user_id", merchant::MSG_NOT_OPEN);
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        };
        let recipient = match merchant::parse_settle_account(&envelope.data, kind) {
            Ok(recipient) => recipient,
            Err(rejection) => {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await
            }
        };
        tx.rollback().await?;
        (sub_app_id, recipient)
    };
    let asked = SettleAccountRequest {
        account: recipient.account,
        kind: recipient.kind,
        open_bank: recipient.open_bank,
        open_bank_code: recipient.open_bank_code,
    };
    let made = match provider::client(engine)?
        .create_settle_account(&sub_app_id, &asked)
        .await
    {
        Ok(made) => provider::masked(made),
        Err(error) => {
            let mut rejection = provider::refused_or_retry(error)?;
            crate::domain::account::scrub_rejection(&mut rejection, &[asked.account.as_str()]);
            return step::refuse(engine, envelope, rejection).await;
        }
    };
    let settle_account_id = provider::field(&made, "id")?.to_owned();
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    merchants::insert_settle_account(
        &tx,
        envelope.user_id,
        &envelope.id,
        &settle_account_id,
        &made,
    )
    .await?;
    let result = succeeded(envelope, None, json!({ "settle_account": made }));
    step::store_result(tx, envelope, &result).await
}
