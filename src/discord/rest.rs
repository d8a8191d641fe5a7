//! Discord's REST API, the few calls we make: interaction callbacks, edits of `@original`, channel messages, command registration; 429 `Retry-After` honoured.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::discord::Snowflake;
use crate::config::Secret;

use super::reply::Attachment;

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
    /// With a file, the body is multipart (`payload_json` + `files[0]`).
    pub async fn edit_original(&self, app: Snowflake, token: &Secret<String>, message: &Value, file: Option<&Attachment>) -> Result<(), RestError> {
        self.send_with(Method::PATCH, &format!("/webhooks/{app}/{}/messages/@original", token.expose()), message, file, false).await
    }

    /// Deletes the interaction's original response.
    pub async fn delete_original(&self, app: Snowflake, token: &Secret<String>) -> Result<(), RestError> {
        self.send(Method::DELETE, &format!("/webhooks/{app}/{}/messages/@original", token.expose()), &Value::Null, false).await
    }

    /// Sends a follow-up message to the interaction (`POST /webhooks/{app}/{token}`), e.g. an ephemeral one.
    pub async fn follow_up(&self, app: Snowflake, token: &Secret<String>, message: &Value, file: Option<&Attachment>) -> Result<(), RestError> {
        self.send_with(Method::POST, &format!("/webhooks/{app}/{}", token.expose()), message, file, false).await
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
        self.send_with(method, path, body, None, bot).await
    }

    async fn send_with(&self, method: Method, path: &str, body: &Value, file: Option<&Attachment>, bot: bool) -> Result<(), RestError> {
        let multipart = file.map(|f| multipart(body, f));
        for _ in 0..TRIES {
            let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
            if let Some((content_type, bytes)) = &multipart {
                req = req.header("content-type", content_type.as_str()).body(bytes.clone());
            } else if !body.is_null() {
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

/// A message with one file as Discord takes it ([uploading files](https://discord.com/developers/docs/reference#uploading-files)):
/// `multipart/form-data` with the JSON body in `payload_json` and the file in `files[0]` (the body's
/// `attachments[0]` has `id` 0). Returns the content type (with its boundary) and the body.
pub fn multipart(message: &Value, file: &Attachment) -> (String, Vec<u8>) {
    // A boundary that occurs in neither part.
    let json = message.to_string();
    let mut boundary = format!("pvedeploy-{}", hex::encode(rand::random::<[u8; 12]>()));
    while json.contains(&boundary) || file.bytes.windows(boundary.len()).any(|w| w == boundary.as_bytes()) {
        boundary = format!("pvedeploy-{}", hex::encode(rand::random::<[u8; 12]>()));
    }
    // The file name is ours (`logs-<app name>.txt`), but never let it break the header.
    let filename: String = file.filename.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').collect();
    let mut body = Vec::with_capacity(json.len() + file.bytes.len() + 400);
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n").as_bytes());
    body.extend_from_slice(json.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"{filename}\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").as_bytes());
    body.extend_from_slice(&file.bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_goes_as_files_0_beside_payload_json() {
        let (ct, body) = multipart(&serde_json::json!({"content": "hi", "attachments": [{"id": 0, "filename": "logs-web.txt"}]}), &Attachment { filename: "logs-web.txt".into(), bytes: b"line 1\nline 2\n".to_vec() });
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"")), "{text}");
        assert!(text.contains("name=\"files[0]\"; filename=\"logs-web.txt\"\r\n"), "{text}");
        assert!(text.contains("\r\n\r\nline 1\nline 2\n\r\n"), "{text}");
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
