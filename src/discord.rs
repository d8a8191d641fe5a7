//! The Discord door: `POST /discord/interactions` (signature before anything else) and the gateway bot, both through one pure command layer; replies completed through the follow-up webhook.

pub mod authz;
pub mod command;
mod complete;
pub mod confirm;
pub mod definitions;
pub mod gateway;
pub mod interaction;
pub mod notify;
pub mod render;
mod replay;
pub mod reply;
pub mod rest;
mod run;
pub mod signature;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use poem::error::ReadBodyError;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{error, invalid};
use crate::config::discord::DiscordSettings;
use crate::core::command::{Actor, Door};
use crate::engine::schedules::Scheduler;
use crate::engine::{Engine, EngineError};
use authz::{authorize, Policy};
use command::{parse_command, parse_component, DiscordCommand, Need};
use interaction::{Interaction, Kind};
use reply::Reply;
use rest::Rest;

pub use authz::Refusal;

/// Where Discord posts interactions.
pub const PATH: &str = "/discord/interactions";
/// Interactions are small; anything larger is refused before it is read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a public read waits for the store to say whether the deployment it names exists, before deferring
/// (Discord wants the first answer within 3 seconds: [responding to an interaction](https://discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction)).
const PRECHECK: Duration = Duration::from_secs(2);

/// The Discord door's state.
#[derive(Clone)]
pub struct DiscordDoor {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    schedules: Scheduler,
    settings: DiscordSettings,
    policy: Policy,
    key: Option<ed25519_dalek::VerifyingKey>,
    rest: Rest,
    confirmations: confirm::Confirmations,
    seen: replay::Seen,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// What an interaction is answered with at once, and the work that completes it afterwards.
pub struct Answer {
    pub initial: Value,
    pub work: Option<BoxFuture<'static, ()>>,
}

impl Answer {
    fn now(initial: Value) -> Answer {
        Answer { initial, work: None }
    }
}


/// The poem endpoint behind [`PATH`].
#[poem::handler]
pub async fn receive(req: &Request, body: Body, door: Data<&DiscordDoor>) -> Response {
    let mut resp = door.receive(req, body).await;
    resp.set_data(poem_openapi::OperationId("discord_interaction"));
    resp
}

impl DiscordDoor {
    pub fn new(engine: Engine, schedules: Scheduler, settings: &DiscordSettings) -> Self {
        let key = settings.public_key.and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok());
        DiscordDoor {
            inner: Arc::new(Inner {
                engine,
                schedules,
                policy: Policy::from_settings(settings),
                key,
                rest: Rest::new(&settings.api_base, settings.bot_token.clone()),
                settings: settings.clone(),
                confirmations: Default::default(),
                seen: Default::default(),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Starts what the configuration asks for: command registration, the gateway bot and notifications
    /// (each needs the bot token; without it the log says what does not start).
    pub fn start(&self) {
        let s = &self.inner.settings;
        if self.inner.key.is_some() {
            tracing::info!(path = PATH, "Discord interactions endpoint enabled");
        }
        let Some(token) = s.bot_token.clone() else {
            tracing::info!("no Discord bot token (discord.bot_token / PVEDEPLOY_DISCORD_BOT_TOKEN): the gateway bot, command registration and notifications do not start");
            return;
        };
        let door = self.clone();
        self.inner.tasks.spawn(async move { door.register_commands().await });
        notify::spawn(self);
        if !s.gateway {
            tracing::info!("the Discord gateway bot is off (discord.gateway = false): interactions arrive at the HTTP endpoint only");
            return;
        }
        let door = self.clone();
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move { gateway::run(door, token, stop).await });
    }

    async fn register_commands(&self) {
        let Some(app) = self.inner.settings.application_id else { return };
        let commands = definitions::commands_json(self.inner.engine.limits());
        for guild in &self.inner.settings.guild_ids {
            match self.inner.rest.put_guild_commands(app, *guild, &commands).await {
                Ok(()) => tracing::info!(%guild, "Discord commands registered"),
                Err(e) => tracing::error!(%guild, error = %e, "Discord commands not registered"),
            }
        }
    }

    async fn receive(&self, req: &Request, body: Body) -> Response {
        let Some(key) = &self.inner.key else {
            return error(StatusCode::NOT_FOUND, "not_configured", "Discord interactions not configured: set [discord] public_key or PVEDEPLOY_DISCORD_PUBLIC_KEY");
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if header("content-length").and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l > MAX_BODY_BYTES as u64) {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body must be at most {MAX_BODY_BYTES} bytes"));
        }
        let body = match body.into_bytes_limit(MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(ReadBodyError::PayloadTooLarge) => return error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body must be at most {MAX_BODY_BYTES} bytes")),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("the body could not be read: {e}")),
        };
        // The signature, before anything looks at the body.
        let now = crate::engine::now_millis() / 1000;
        if let Err(e) = signature::verify(key, header("x-signature-ed25519"), header("x-signature-timestamp"), &body, now) {
            tracing::warn!(reason = %e, remote = %req.remote_addr(), "Discord interaction refused: signature");
            return error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
        }
        let i = match interaction::parse(&body) {
            Ok(i) => i,
            Err(e) => return invalid(&crate::core::validation::ValidationErrors(vec![e])),
        };
        let answer = self.handle(i).await;
        if let Some(work) = answer.work {
            self.inner.tasks.spawn(work);
        }
        poem::web::Json(answer.initial).into_response()
    }

    /// Answers an interaction from the gateway: the initial response through the callback, then the work.
    pub async fn answer_via_callback(&self, i: Interaction) {
        let (id, token) = (i.id, i.token.clone());
        let answer = self.handle(i).await;
        if let Err(e) = self.inner.rest.callback(id, &token, &answer.initial).await {
            tracing::error!(error = %e, "could not answer a Discord interaction");
            return;
        }
        if let Some(work) = answer.work {
            self.inner.tasks.spawn(work);
        }
    }

    /// The one way an interaction is handled, whichever way it came in: answered once per interaction id,
    /// authorized (guild, roles) on every interaction, converted, answered at once, the work handed back to run after
    /// the answer. Whether the answer is private is decided here, before it is deferred.
    pub async fn handle(&self, i: Interaction) -> Answer {
        if i.kind == Kind::Ping {
            return Answer::now(reply::pong());
        }
        if !self.inner.seen.first(i.id, Instant::now()) {
            tracing::warn!(interaction = %i.id, "Discord interaction received again: answered once already, nothing done");
            return Answer::now(reply::immediate(&Reply::private("This interaction was already answered; nothing was done again.")));
        }
        let (cmd, components) = match &i.kind {
            Kind::Ping => return Answer::now(reply::pong()),
            Kind::Autocomplete { command, focused, typed, .. } => return Answer::now(complete::answer(self, &i, command, focused, typed).await),
            Kind::Command { name, options } => (parse_command(name, options), serde_json::Value::Null),
            Kind::Component { custom_id, components } => (parse_component(custom_id), components.clone()),
            Kind::Other(n) => {
                tracing::debug!(kind = n, "Discord interaction type not handled");
                return Answer::now(reply::immediate(&Reply::private("pvedeploy does not handle this kind of interaction.")));
            }
        };
        let need = cmd.as_ref().map(DiscordCommand::need).unwrap_or(Need::Read);
        if let Err(refusal) = authorize(&self.inner.policy, &i, need) {
            let who = i.caller.as_ref().map(|c| c.id.to_string()).unwrap_or_default();
            tracing::warn!(user = %who, guild = ?i.guild_id, %refusal, "Discord interaction refused");
            return Answer::now(reply::immediate(&Reply::private(format!("⛔ {refusal}."))));
        }
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => return Answer::now(reply::immediate(&render::invalid(&e))),
        };
        let Some(caller) = i.caller.clone() else { return Answer::now(reply::immediate(&Reply::private(Refusal::NoUser.to_string()))) };
        let actor = Actor { name: format!("discord:{} {}", caller.id, caller.name), door: Door::Discord };
        let door = self.clone();
        // A press of a confirmation that is no longer pending (expired, used, or issued before a restart) disables
        // the message's buttons in place; a press by someone else is told so privately.
        let unconfirmed = |e: confirm::ConfirmError| match e {
            confirm::ConfirmError::Unknown => Answer::now(reply::update_disabled(&format!("⌛ {e}; nothing was changed."), &components)),
            confirm::ConfirmError::OtherUser => Answer::now(reply::immediate(&Reply::private(format!("⛔ {e}.")))),
        };
        match cmd {
            DiscordCommand::Deploy(raw) => match self.inner.engine.parse_spec(raw) {
                Ok(spec) => Answer { initial: reply::deferred(false), work: Some(Box::pin(run::deploy(door, i, spec, actor))) },
                Err(EngineError::Invalid(e)) => Answer::now(reply::immediate(&render::invalid(&e))),
                Err(e) => Answer::now(reply::immediate(&render::engine_error(&e))),
            },
            DiscordCommand::ConfirmDestroy { deployment, nonce } => match self.inner.confirmations.take(&nonce, Some(&deployment), caller.id, Instant::now()) {
                Ok(id) => Answer { initial: reply::deferred_update(), work: Some(Box::pin(run::destroy(door, i, id, actor))) },
                Err(e) => unconfirmed(e),
            },
            DiscordCommand::ConfirmRestore { nonce } => match self.inner.confirmations.take(&nonce, None, caller.id, Instant::now()) {
                Ok(bound) => Answer { initial: reply::deferred_update(), work: Some(Box::pin(run::restore(door, i, bound, actor))) },
                Err(e) => unconfirmed(e),
            },
            DiscordCommand::CancelDestroy { nonce } => match self.inner.confirmations.take(&nonce, None, caller.id, Instant::now()) {
                Ok(_) => Answer { initial: reply::deferred_update(), work: Some(Box::pin(async move { door.edit(&i, &Reply::text("Cancelled; nothing was changed."), false).await })) },
                Err(e) => unconfirmed(e),
            },
            other => {
                let private = other.private();
                // A shared read of a deployment that does not exist is refused before anything is shown publicly.
                if !private {
                    if let Some(refused) = self.missing(&other).await {
                        return Answer::now(reply::immediate(&refused));
                    }
                }
                Answer { initial: reply::deferred(private), work: Some(Box::pin(run::command(door, i, other, actor))) }
            }
        }
    }

    /// For a public read naming a deployment: the private refusal when it certainly does not exist (looked up under
    /// a short deadline; when the store is slow the read goes on and reports it in the background).
    async fn missing(&self, cmd: &DiscordCommand) -> Option<Reply> {
        let name = match cmd {
            DiscordCommand::Status { name: Some(n), .. } | DiscordCommand::Schedules { name: Some(n), .. } => n,
            DiscordCommand::Logs { name, .. } | DiscordCommand::Snapshots { name, .. } | DiscordCommand::Backups { name, .. } => name,
            _ => return None,
        };
        match tokio::time::timeout(PRECHECK, self.inner.engine.find(name)).await {
            Ok(Err(e @ EngineError::NotFound(_))) => Some(render::engine_error(&e)),
            _ => None,
        }
    }

    /// Completes the interaction's original message. `private_deferral`: the answer was deferred as ephemeral, so
    /// the original is private and is edited whatever the reply. Otherwise an ephemeral reply (an error, a refusal)
    /// replaces the public "thinking…" message with a follow-up only the caller sees. The first edit can race
    /// Discord's processing of our deferred answer, so an unknown message is retried briefly.
    async fn edit(&self, i: &Interaction, r: &Reply, private_deferral: bool) {
        let body = r.message_json();
        let file = r.file.as_ref();
        let rest = &self.inner.rest;
        for attempt in 0..5 {
            let sent = if r.ephemeral && !private_deferral {
                match rest.delete_original(i.application_id, &i.token).await {
                    Ok(()) => rest.follow_up(i.application_id, &i.token, &body, file).await,
                    Err(e) => Err(e),
                }
            } else {
                rest.edit_original(i.application_id, &i.token, &body, file).await
            };
            match sent {
                Ok(()) => return,
                Err(rest::RestError::Refused { status: 404, .. }) if attempt < 4 => tokio::time::sleep(Duration::from_millis(300)).await,
                Err(e) => {
                    tracing::warn!(error = %e, interaction = %i.id, "could not edit a Discord reply");
                    return;
                }
            }
        }
    }

    /// Stops the bot, the notifications and the follow-ups, waiting up to `grace` for them.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("Discord tasks still running after {grace:?}");
        }
    }
}
