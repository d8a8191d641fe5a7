//! Discord's REST API, the few calls we make: interaction callbacks, edits of `@original`, channel messages, command registration; 429 `Retry-After` honoured.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::discord::Snowflake;
use crate::config::Secret;

/// Why a call to Discord failed; the interaction token is never part of the message.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Discord could not be reached; a later call may work.
    #[error("Discord unreachable: {0}")]
    Unreachable(String),
    /// Discord kept answering 429 beyond our patience.
    #[error("Discord rate limit: gave up after {0} tries")]
    RateLimited(u32),
    /// Discord refused the call (a bad token, a missing permission, an expired interaction): fix the configuration.
    #[error("Discord answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// Tries of one call while Discord answers 429.
const TRIES: u32 = 5;
/// The longest `Retry-After` we wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    bot_token: Option<Secret<String>>,
}

impl Rest {
    pub fn new(base: &str, bot_token: Option<Secret<String>>) -> Rest {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("DiscordBot (https://github.com/pvedeploy/pvedeploy, ", env!("CARGO_PKG_VERSION"), ")"))
            .build()
            .unwrap_or_default();
        Rest { http, base: base.trim_end_matches('/').to_string(), bot_token }
    }

    /// Answers an interaction received from the gateway (`POST /interactions/{id}/{token}/callback`).
    pub async fn callback(&self, id: Snowflake, token: &Secret<String>, response: &Value) -> Result<(), RestError> {
        self.send(Method::POST, &format!("/interactions/{id}/{}/callback", token.expose()), response, false).await
    }

    /// Edits the interaction's original response (`PATCH /webhooks/{app}/{token}/messages/@original`).
    pub async fn edit_original(&self, app: Snowflake, token: &Secret<String>, message: &Value) -> Result<(), RestError> {
        self.send(Method::PATCH, &format!("/webhooks/{app}/{}/messages/@original", token.expose()), message, false).await
    }

    /// Deletes the interaction's original response.
    pub async fn delete_original(&self, app: Snowflake, token: &Secret<String>) -> Result<(), RestError> {
        self.send(Method::DELETE, &format!("/webhooks/{app}/{}/messages/@original", token.expose()), &Value::Null, false).await
    }

    /// Sends a follow-up message to the interaction (`POST /webhooks/{app}/{token}`), e.g. an ephemeral one.
    pub async fn follow_up(&self, app: Snowflake, token: &Secret<String>, message: &Value) -> Result<(), RestError> {
        self.send(Method::POST, &format!("/webhooks/{app}/{}", token.expose()), message, false).await
    }

    /// Posts a message in a channel (needs the bot token).
    pub async fn post_message(&self, channel: Snowflake, message: &Value) -> Result<(), RestError> {
        self.send(Method::POST, &format!("/channels/{channel}/messages"), message, true).await
    }

    /// Replaces a guild's commands with `commands` (needs the bot token).
    pub async fn put_guild_commands(&self, app: Snowflake, guild: Snowflake, commands: &Value) -> Result<(), RestError> {
        self.send(Method::PUT, &format!("/applications/{app}/guilds/{guild}/commands"), commands, true).await
    }

    async fn send(&self, method: Method, path: &str, body: &Value, bot: bool) -> Result<(), RestError> {
        for _ in 0..TRIES {
            let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
            if !body.is_null() {
                req = req.json(body);
            }
            if bot {
                if let Some(t) = &self.bot_token {
                    req = req.header("authorization", format!("Bot {}", t.expose()));
                }
            }
            let resp = req.send().await.map_err(|e| RestError::Unreachable(e.without_url().to_string()))?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let header = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok());
                let body: Option<Value> = resp.json().await.ok();
                let secs = header.or_else(|| body.as_ref().and_then(|b| b["retry_after"].as_f64())).unwrap_or(1.0);
                let wait = Duration::from_secs_f64(secs.clamp(0.0, MAX_WAIT.as_secs_f64()));
                tracing::debug!(?wait, "Discord rate limit: waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_success() {
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            return Err(RestError::Refused { status: status.as_u16(), body: text.chars().take(300).collect() });
        }
        Err(RestError::RateLimited(TRIES))
    }
}
