//! The gateway bot (serenity): receives interactions over the gateway and hands them, as Discord's JSON, to the same command layer as the HTTP endpoint.

use serenity::all::{Client, Context, EventHandler, GatewayIntents, Interaction as SerenityInteraction, Ready};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;

use super::{interaction, DiscordDoor};

struct Handler {
    door: DiscordDoor,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "Discord gateway connected");
    }

    async fn interaction_create(&self, _ctx: Context, event: SerenityInteraction) {
        // One core, two ways in: serenity's model goes back to Discord's wire JSON and through our own parser.
        let parsed = serde_json::to_vec(&event).map_err(|e| e.to_string()).and_then(|body| interaction::parse(&body).map_err(|e| e.to_string()));
        match parsed {
            Ok(i) => self.door.answer_via_callback(i).await,
            Err(e) => tracing::warn!(error = %e, "a gateway interaction could not be read"),
        }
    }
}

/// Runs the bot until `stop`. Slash commands need no gateway intent, privileged or not.
pub async fn run(door: DiscordDoor, token: Secret<String>, stop: CancellationToken) {
    let mut client = match Client::builder(token.expose(), GatewayIntents::empty()).event_handler(Handler { door }).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the Discord gateway bot could not be built");
            return;
        }
    };
    let shards = client.shard_manager.clone();
    tokio::select! {
        r = client.start() => if let Err(e) = r {
            tracing::error!(error = %e, "the Discord gateway bot stopped");
        },
        _ = stop.cancelled() => {
            shards.shutdown_all().await;
            tracing::info!("Discord gateway bot stopped");
        }
    }
}
