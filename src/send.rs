//! `pluspay send`: publish one command and wait for its result, for operators and scripts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::amqp::publisher::json_properties;
use crate::amqp::{self, Brokers, Names, Publisher, BROKER_TIMEOUT};
use crate::config::Settings;
use crate::domain::command::{valid_id, CommandType};

#[derive(Debug)]
pub struct SendRequest {
    pub kind: String,
    pub user_id: i64,
    pub data: Option<String>,
    pub id: Option<String>,
    pub timeout: Duration,
}

/// Builds the command message, refusing locally what the worker would refuse as malformed.
pub fn build_command(request: &SendRequest) -> anyhow::Result<(String, CommandType, Value)> {
    let kind = CommandType::parse(&request.kind)
        .ok_or_else(|| anyhow::anyhow!("unknown command type {:?}", request.kind))?;
    if request.user_id <= 0 {
        anyhow::bail!("--user must be a positive integer");
    }
    let data: Map<String, Value> = match &request.data {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => anyhow::bail!("--data must be a JSON object"),
            Err(e) => anyhow::bail!("--data is not JSON: {e}"),
        },
    };
    let id = request
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if !valid_id(&id) {
        anyhow::bail!("--id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
    }
    let command =
        json!({ "id": id, "type": kind.as_str(), "user_id": request.user_id, "data": data });
    Ok((id, kind, command))
}

/// Publishes the command and returns the result's JSON text. When the broker connection goes
/// before the result came, it connects to the next broker that answers and publishes the same
/// command again (the same id: the worker applies it once and answers the copy from its log).
pub async fn send(settings: &Settings, request: &SendRequest) -> anyhow::Result<String> {
    let (id, kind, command) = build_command(request)?;
    let body = command.to_string();
    let names = Names::new(&settings.amqp.namespace);
    let mut brokers = Brokers::from_settings(&settings.amqp, "send")?;
    let deadline = tokio::time::Instant::now() + request.timeout;
    let mut lost = None;
    loop {
        let attempt = publish_and_wait(settings, &mut brokers, &names, &id, kind, &body);
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(result)) => return Ok(result),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no result on this broker connection; trying again");
                lost = Some(e);
            }
            Err(_) => {
                let why = lost.map_or(String::new(), |e| format!(" (last broker error: {e})"));
                anyhow::bail!(
                    "no result for command {id} within {:?}; is a worker running?{why}",
                    request.timeout
                );
            }
        }
        tokio::time::sleep_until(
            (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline),
        )
        .await;
    }
}

/// One connection's try: publish the command with a reply queue of this connection and wait
/// for its result; an error when the connection goes first.
async fn publish_and_wait(
    settings: &Settings,
    brokers: &mut Brokers,
    names: &Names,
    id: &str,
    kind: CommandType,
    body: &str,
) -> anyhow::Result<String> {
    let connection = Arc::new(brokers.connect("pluspay-send").await?);
    // A least-privileged broker user may not declare the topology: declared only when
    // missing, so that a command sent before any worker ran waits in the queue.
    if !amqp::topology::commands_exist(&connection, names).await? {
        amqp::topology::declare(&connection, names, &settings.amqp).await?;
    }
    let channel = connection.create_channel().await?;
    let (reply_queue, mut replies) = amqp::reply_queue(&channel).await?;
    let publisher = Publisher::open(connection.clone()).await?;
    let mut properties = json_properties()
        .with_reply_to(reply_queue)
        .with_correlation_id(id.into())
        .with_message_id(id.into());
    // The broker checks it against the connection's user: how an operator proves who sends.
    if let Some(user) = brokers.user() {
        properties = properties.with_user_id(user.into());
    }
    publisher
        .publish(
            &names.commands_exchange,
            kind.as_str(),
            body.as_bytes(),
            properties,
            true,
        )
        .await?;
    let result = amqp::result_for(&mut replies, id).await;
    let _ = tokio::time::timeout(BROKER_TIMEOUT, connection.close(200, "bye".into())).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str, user_id: i64, data: Option<&str>, id: Option<&str>) -> SendRequest {
        SendRequest {
            kind: kind.into(),
            user_id,
            data: data.map(Into::into),
            id: id.map(Into::into),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn builds_the_contract_shape() {
        let (id, kind, command) = build_command(&request(
            "transfer",
            1,
            Some(r#"{"user":2,"amount":100}"#),
            Some("k1"),
        ))
        .unwrap();
        assert_eq!((id.as_str(), kind), ("k1", CommandType::Transfer));
        assert_eq!(
            command,
            json!({"id": "k1", "type": "transfer", "user_id": 1, "data": {"user": 2, "amount": 100}})
        );
        let (generated, _, _) = build_command(&request("wallet.get", 1, None, None)).unwrap();
        assert!(valid_id(&generated));
    }

    #[test]
    fn refuses_bad_arguments() {
        for (r, message) in [
            (request("nope", 1, None, None), "unknown command type"),
            (request("transfer", 0, None, None), "--user"),
            (request("transfer", 1, Some("[1]"), None), "JSON object"),
            (request("transfer", 1, Some("{"), None), "not JSON"),
            (request("transfer", 1, None, Some("a b")), "--id"),
        ] {
            let err = build_command(&r).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }
}
