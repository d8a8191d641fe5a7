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
        match to_interaction(&event) {
            Ok(i) => self.door.answer_via_callback(i).await,
            Err(e) => tracing::warn!(error = %e, "a gateway interaction could not be read"),
        }
    }
}

/// One core, two ways in: serenity's model goes back to Discord's wire JSON and through our own parser.
/// Serenity leaves the interaction's `type` out of what it serializes (it is the enum's variant), so it is put back.
pub fn to_interaction(event: &SerenityInteraction) -> Result<interaction::Interaction, String> {
    let mut v = serde_json::to_value(event).map_err(|e| e.to_string())?;
    let kind = match event {
        SerenityInteraction::Ping(_) => 1,
        SerenityInteraction::Command(_) => 2,
        SerenityInteraction::Component(_) => 3,
        SerenityInteraction::Autocomplete(_) => 4,
        SerenityInteraction::Modal(_) => 5,
        _ => 0,
    };
    v["type"] = serde_json::json!(kind);
    interaction::parse(v.to_string().as_bytes()).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::discord::Snowflake;
    use serde_json::json;

    /// An interaction as Discord sends it from a guild, of type `kind` with `data`.
    fn wire(kind: u8, id: &str, data: serde_json::Value) -> serde_json::Value {
        json!({
            "type": kind, "id": id, "application_id": "20", "token": "tok", "version": 1, "locale": "en-US", "app_permissions": "0",
            "guild_id": "30", "channel_id": "31", "entitlements": [], "attachment_size_limit": 8388608, "authorizing_integration_owners": {}, "context": 0,
            "member": {"user": {"id": "40", "username": "ada", "discriminator": "0", "avatar": null, "global_name": null},
                       "roles": ["50"], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": false, "mute": false, "flags": 0},
            "data": data,
        })
    }

    #[test]
    fn a_gateway_command_reads_like_the_same_command_at_the_endpoint() {
        let wire = wire(2, "10", json!({"id": "60", "name": "logs", "type": 1, "options": [{"name": "name", "type": 3, "value": "web"}, {"name": "lines", "type": 4, "value": 5}]}));
        let event: SerenityInteraction = serde_json::from_value(wire.clone()).expect("serenity reads Discord's payload");
        let via_gateway = to_interaction(&event).unwrap();
        let via_endpoint = interaction::parse(wire.to_string().as_bytes()).unwrap();
        assert_eq!(via_gateway.kind, via_endpoint.kind);
        assert_eq!((via_gateway.guild_id, via_gateway.roles.clone(), via_gateway.caller.clone()), (via_endpoint.guild_id, via_endpoint.roles, via_endpoint.caller));
        assert_eq!((via_gateway.id, via_gateway.application_id, via_gateway.token.expose().as_str()), (Snowflake(10), Snowflake(20), "tok"));
    }

    #[test]
    fn a_gateway_autocomplete_reads_like_the_same_at_the_endpoint() {
        let wire = wire(4, "11", json!({"id": "60", "name": "logs", "type": 1, "options": [{"name": "name", "type": 3, "value": "we", "focused": true}]}));
        let event: SerenityInteraction = serde_json::from_value(wire.clone()).expect("serenity reads Discord's payload");
        let via_gateway = to_interaction(&event).unwrap();
        let via_endpoint = interaction::parse(wire.to_string().as_bytes()).unwrap();
        assert_eq!(via_gateway.kind, via_endpoint.kind);
        assert!(matches!(via_endpoint.kind, interaction::Kind::Autocomplete { .. }), "{:?}", via_endpoint.kind);
    }
}
