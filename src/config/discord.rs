//! The `[discord]` section: bot token, application, public key, guilds and roles, notification channel; parsed with field-named errors.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{invalid, ConfigError, Secret};

/// `[discord]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordFile {
    /// The bot's token (better: `PVEDEPLOY_DISCORD_BOT_TOKEN`); without it the gateway bot does not start.
    pub bot_token: Option<Secret<String>>,
    /// The application's id (a snowflake), used for command registration and follow-up webhooks.
    pub application_id: Option<String>,
    /// The application's Ed25519 public key, 64 hex digits (also `PVEDEPLOY_DISCORD_PUBLIC_KEY`);
    /// without it `POST /discord/interactions` answers 404.
    pub public_key: Option<String>,
    /// The guilds (servers) the commands are registered in and accepted from.
    #[serde(default)]
    pub guild_ids: Vec<String>,
    /// Roles (ids) allowed to read (`/status`, `/list`, `/logs`, `/resources`); empty = everyone in the guild.
    #[serde(default)]
    pub read_roles: Vec<String>,
    /// Roles (ids) allowed to change (`/deploy`, `/redeploy`, `/rollback`, `/stop`, `/start`, `/destroy`); empty = nobody.
    #[serde(default)]
    pub change_roles: Vec<String>,
    /// The channel deployment events are posted to (none: no notifications).
    pub notify_channel_id: Option<String>,
    /// Discord's REST API (default `https://discord.com/api/v10`).
    pub api_base: Option<String>,
    /// Connect the gateway bot when a bot token is set (default true). `false` for installs that take
    /// interactions at the HTTP endpoint only and use the token just to register commands and notify.
    pub gateway: Option<bool>,
}

/// A Discord id (a snowflake: a decimal u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snowflake(pub u64);

impl Snowflake {
    pub fn parse(s: &str) -> Option<Snowflake> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(Snowflake)
    }
}

impl std::fmt::Display for Snowflake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// The Discord settings, parsed. `enabled()` is false when neither way in is configured.
#[derive(Debug, Clone)]
pub struct DiscordSettings {
    pub bot_token: Option<Secret<String>>,
    pub application_id: Option<Snowflake>,
    /// The 32 bytes of the application's Ed25519 public key.
    pub public_key: Option<[u8; 32]>,
    pub guild_ids: Vec<Snowflake>,
    pub read_roles: Vec<Snowflake>,
    pub change_roles: Vec<Snowflake>,
    pub notify_channel_id: Option<Snowflake>,
    /// Without a trailing slash.
    pub api_base: String,
    /// Whether the gateway bot connects (it also needs the bot token).
    pub gateway: bool,
}

impl Default for DiscordSettings {
    fn default() -> Self {
        DiscordSettings {
            bot_token: None,
            application_id: None,
            public_key: None,
            guild_ids: vec![],
            read_roles: vec![],
            change_roles: vec![],
            notify_channel_id: None,
            api_base: DEFAULT_API_BASE.into(),
            gateway: true,
        }
    }
}

impl DiscordSettings {
    /// Whether anything Discord is configured (an endpoint key or a bot token).
    pub fn enabled(&self) -> bool {
        self.public_key.is_some() || self.bot_token.is_some()
    }
}

fn snowflake(field: &str, s: &str) -> Result<Snowflake, ConfigError> {
    Snowflake::parse(s).ok_or_else(|| invalid(field, "must be a Discord id (a snowflake: decimal digits, as \"Copy ID\" gives it)"))
}

fn snowflakes(field: &str, list: &[String]) -> Result<Vec<Snowflake>, ConfigError> {
    list.iter().enumerate().map(|(i, s)| snowflake(&format!("{field}[{i}]"), s)).collect()
}

pub fn parse(file: DiscordFile, env: &BTreeMap<String, String>) -> Result<DiscordSettings, ConfigError> {
    let bot_token = env.get("PVEDEPLOY_DISCORD_BOT_TOKEN").map(|t| Secret::new(t.clone())).or(file.bot_token);
    if bot_token.as_ref().is_some_and(|t| t.expose().trim().is_empty() || t.expose().chars().any(char::is_whitespace)) {
        return Err(invalid("discord.bot_token", "must be the bot token without spaces"));
    }
    let (key_field, key) = match env.get("PVEDEPLOY_DISCORD_PUBLIC_KEY") {
        Some(k) => ("PVEDEPLOY_DISCORD_PUBLIC_KEY", Some(k.clone())),
        None => ("discord.public_key", file.public_key),
    };
    let public_key = match key {
        None => None,
        Some(k) => {
            let bytes = hex::decode(k.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
            let bytes = bytes.ok_or_else(|| invalid(key_field, "must be 64 hex digits (the application's \"Public Key\" in the Developer Portal)"))?;
            if ed25519_dalek::VerifyingKey::from_bytes(&bytes).is_err() {
                return Err(invalid(key_field, "is not a valid Ed25519 public key"));
            }
            Some(bytes)
        }
    };
    let application_id = file.application_id.as_deref().map(|s| snowflake("discord.application_id", s)).transpose()?;
    let guild_ids = snowflakes("discord.guild_ids", &file.guild_ids)?;
    let read_roles = snowflakes("discord.read_roles", &file.read_roles)?;
    let change_roles = snowflakes("discord.change_roles", &file.change_roles)?;
    let notify_channel_id = file.notify_channel_id.as_deref().map(|s| snowflake("discord.notify_channel_id", s)).transpose()?;
    let api_base = file.api_base.unwrap_or_else(|| DEFAULT_API_BASE.into()).trim_end_matches('/').to_string();
    if !(api_base.starts_with("https://") || api_base.starts_with("http://127.") || api_base.starts_with("http://localhost")) {
        return Err(invalid("discord.api_base", "must be an https:// URL (plain http only on loopback, for tests)"));
    }
    let gateway = file.gateway.unwrap_or(true);
    let s = DiscordSettings { bot_token, application_id, public_key, guild_ids, read_roles, change_roles, notify_channel_id, api_base, gateway };
    if s.enabled() {
        if s.application_id.is_none() {
            return Err(invalid("discord.application_id", "is required when a bot token or public key is set"));
        }
        if s.guild_ids.is_empty() {
            return Err(invalid("discord.guild_ids", "must list at least one guild: commands are accepted only from configured guilds"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn parse_toml(t: &str) -> Result<DiscordSettings, ConfigError> {
        parse(toml::from_str(t).unwrap(), &BTreeMap::new())
    }

    #[test]
    fn a_full_section_parses_and_the_token_never_prints() {
        let s = parse_toml(&format!(
            "bot_token='abc.def.ghi-secret'\napplication_id='123'\npublic_key='{KEY}'\nguild_ids=['1']\nread_roles=['2']\nchange_roles=['3']\nnotify_channel_id='4'"
        ))
        .unwrap();
        assert!(s.enabled());
        assert_eq!((s.guild_ids[0], s.read_roles[0], s.change_roles[0], s.notify_channel_id), (Snowflake(1), Snowflake(2), Snowflake(3), Some(Snowflake(4))));
        assert_eq!(s.api_base, DEFAULT_API_BASE);
        assert!(!format!("{s:?}").contains("abc.def.ghi-secret"));
        assert!(!parse_toml("").unwrap().enabled());
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            ("public_key='abcd'".to_string(), "discord.public_key"),
            (format!("public_key='{KEY}'\nguild_ids=['1']"), "discord.application_id"),
            (format!("public_key='{KEY}'\napplication_id='1'"), "discord.guild_ids"),
            (format!("public_key='{KEY}'\napplication_id='1'\nguild_ids=['x']"), "discord.guild_ids[0]"),
            ("change_roles=['1', 'admin']".to_string(), "discord.change_roles[1]"),
            ("api_base='http://discord.example'".to_string(), "discord.api_base"),
        ] {
            let e = parse_toml(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        let env = BTreeMap::from([("PVEDEPLOY_DISCORD_PUBLIC_KEY".to_string(), "zz".to_string())]);
        let e = parse(DiscordFile::default(), &env).unwrap_err().to_string();
        assert!(e.contains("PVEDEPLOY_DISCORD_PUBLIC_KEY"), "{e}");
    }
}
