//! Discord's interaction payloads as sent (wire types, serde) and their conversion into a typed `Interaction`.

use serde::Deserialize;
use serde_json::Value;

use crate::config::discord::Snowflake;
use crate::core::validation::FieldError;

/// Who clicked or typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: Snowflake,
    pub name: String,
}

/// An option value as Discord typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Text(String),
    Integer(i64),
    Bool(bool),
    Other(Value),
}

/// What the interaction is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Discord checking the endpoint.
    Ping,
    /// A slash command with its options, in the order sent.
    Command { name: String, options: Vec<(String, OptionValue)> },
    /// A button press on one of our messages, with that message's components (to disable them when the button
    /// expired).
    Component { custom_id: String, components: Value },
    /// An option being typed (`APPLICATION_COMMAND_AUTOCOMPLETE`, type 4): the command, the options filled in so
    /// far, and the focused one (`focused: true`) with what was typed, as text.
    Autocomplete { command: String, options: Vec<(String, OptionValue)>, focused: String, typed: String },
    /// Anything else (modal submit …), by its type number.
    Other(u64),
}

/// An interaction from either way in (HTTP endpoint or gateway), parsed.
#[derive(Clone)]
pub struct Interaction {
    pub id: Snowflake,
    pub application_id: Snowflake,
    /// The interaction token: the key of its follow-up webhook (never logged).
    pub token: crate::config::Secret<String>,
    /// `None` in a direct message.
    pub guild_id: Option<Snowflake>,
    pub caller: Option<Caller>,
    /// The member's roles in the guild (empty in a DM).
    pub roles: Vec<Snowflake>,
    pub kind: Kind,
}

impl std::fmt::Debug for Interaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interaction").field("id", &self.id).field("guild_id", &self.guild_id).field("caller", &self.caller).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// A snowflake as Discord sends it: a string (or, from some serializers, a number).
#[derive(Deserialize)]
#[serde(untagged)]
enum WireId {
    Text(String),
    Number(u64),
}

impl WireId {
    fn parse(&self) -> Option<Snowflake> {
        match self {
            WireId::Text(s) => Snowflake::parse(s),
            WireId::Number(n) => Some(Snowflake(*n)),
        }
    }
}

#[derive(Deserialize)]
struct WireInteraction {
    #[serde(rename = "type")]
    kind: u64,
    id: WireId,
    application_id: WireId,
    token: String,
    guild_id: Option<WireId>,
    member: Option<WireMember>,
    user: Option<WireUser>,
    data: Option<WireData>,
    message: Option<WireMessage>,
}

#[derive(Deserialize)]
struct WireMember {
    user: Option<WireUser>,
    #[serde(default)]
    roles: Vec<WireId>,
}

#[derive(Deserialize)]
struct WireUser {
    id: WireId,
    username: String,
}

#[derive(Deserialize)]
struct WireData {
    name: Option<String>,
    #[serde(default)]
    options: Vec<WireOption>,
    custom_id: Option<String>,
}

#[derive(Deserialize)]
struct WireOption {
    name: String,
    value: Option<Value>,
    /// Set on the option being typed, in an autocomplete interaction.
    #[serde(default)]
    focused: bool,
}

/// The message a component sits on (only its components are read).
#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    components: Value,
}

fn option_value(v: Option<Value>) -> OptionValue {
    match v {
        Some(Value::String(s)) => OptionValue::Text(s),
        Some(Value::Number(n)) if n.is_i64() => OptionValue::Integer(n.as_i64().unwrap_or_default()),
        Some(Value::Bool(b)) => OptionValue::Bool(b),
        Some(other) => OptionValue::Other(other),
        None => OptionValue::Other(Value::Null),
    }
}

fn field(name: &str, rule: &'static str, message: &str) -> FieldError {
    FieldError::new(name, rule, message)
}

/// Parses an interaction body (already signature-checked, or handed over by the gateway).
pub fn parse(body: &[u8]) -> Result<Interaction, FieldError> {
    let w: WireInteraction = serde_json::from_slice(body).map_err(|e| field("body", "interaction", &format!("is not a Discord interaction: {e}")))?;
    let id = w.id.parse().ok_or_else(|| field("id", "snowflake", "must be a Discord id"))?;
    let application_id = w.application_id.parse().ok_or_else(|| field("application_id", "snowflake", "must be a Discord id"))?;
    let guild_id = match &w.guild_id {
        Some(g) => Some(g.parse().ok_or_else(|| field("guild_id", "snowflake", "must be a Discord id"))?),
        None => None,
    };
    let (user, roles) = match w.member {
        Some(m) => (m.user, m.roles.iter().filter_map(WireId::parse).collect()),
        None => (w.user, vec![]),
    };
    let caller = match user {
        Some(u) => Some(Caller { id: u.id.parse().ok_or_else(|| field("user.id", "snowflake", "must be a Discord id"))?, name: u.username }),
        None => None,
    };
    // Interaction types: https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-interaction-type
    let kind = match w.kind {
        1 => Kind::Ping,
        2 => {
            let data = w.data.ok_or_else(|| field("data", "required", "is required for a command"))?;
            let name = data.name.ok_or_else(|| field("data.name", "required", "is required for a command"))?;
            let options = data.options.into_iter().map(|o| (o.name, option_value(o.value))).collect();
            Kind::Command { name, options }
        }
        3 => {
            let custom_id = w.data.and_then(|d| d.custom_id).ok_or_else(|| field("data.custom_id", "required", "is required for a component"))?;
            let components = w.message.map(|m| m.components).unwrap_or(Value::Null);
            Kind::Component { custom_id, components }
        }
        4 => {
            let data = w.data.ok_or_else(|| field("data", "required", "is required for an autocomplete"))?;
            let command = data.name.ok_or_else(|| field("data.name", "required", "is required for an autocomplete"))?;
            let mut focused = None;
            let mut options = Vec::new();
            for o in data.options {
                if o.focused {
                    // what was typed so far, as text even for number options
                    let typed = match o.value {
                        Some(Value::String(s)) => s,
                        Some(Value::Number(n)) => n.to_string(),
                        _ => String::new(),
                    };
                    focused = Some((o.name, typed));
                } else {
                    options.push((o.name, option_value(o.value)));
                }
            }
            let (focused, typed) = focused.ok_or_else(|| field("data.options", "focused", "must hold the option being typed"))?;
            Kind::Autocomplete { command, options, focused, typed }
        }
        n => Kind::Other(n),
    };
    Ok(Interaction { id, application_id, token: crate::config::Secret::new(w.token), guild_id, caller, roles, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_guild_command_parses_with_member_roles_and_options() {
        let body = json!({
            "type": 2, "id": "10", "application_id": "20", "token": "tok", "guild_id": "30",
            "member": {"user": {"id": "40", "username": "ada"}, "roles": ["50", "51"]},
            "data": {"id": "60", "name": "logs", "type": 1, "options": [{"name": "name", "type": 3, "value": "web"}, {"name": "lines", "type": 4, "value": 5}]}
        });
        let i = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(i.guild_id, Some(Snowflake(30)));
        assert_eq!(i.caller, Some(Caller { id: Snowflake(40), name: "ada".into() }));
        assert_eq!(i.roles, vec![Snowflake(50), Snowflake(51)]);
        assert_eq!(i.kind, Kind::Command { name: "logs".into(), options: vec![("name".into(), OptionValue::Text("web".into())), ("lines".into(), OptionValue::Integer(5))] });
        assert!(!format!("{i:?}").contains("tok"), "the token never prints");
    }

    #[test]
    fn a_dm_has_a_user_but_no_guild_and_no_roles() {
        let body = json!({"type": 2, "id": "1", "application_id": "2", "token": "t", "user": {"id": "3", "username": "bob"}, "data": {"name": "list"}});
        let i = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!((i.guild_id, i.roles.len(), i.caller.unwrap().id), (None, 0, Snowflake(3)));
    }

    #[test]
    fn ping_components_and_garbage() {
        let i = parse(br#"{"type":1,"id":"1","application_id":"2","token":"t"}"#).unwrap();
        assert_eq!(i.kind, Kind::Ping);
        let i = parse(br#"{"type":3,"id":"1","application_id":"2","token":"t","data":{"custom_id":"x","component_type":2}}"#).unwrap();
        assert_eq!(i.kind, Kind::Component { custom_id: "x".into(), components: Value::Null });
        let i = parse(
            br#"{"type":4,"id":"1","application_id":"2","token":"t","data":{"id":"9","name":"logs","type":1,"options":[{"name":"name","type":3,"value":"we","focused":true},{"name":"public","type":5,"value":true}]}}"#,
        )
        .unwrap();
        assert_eq!(i.kind, Kind::Autocomplete { command: "logs".into(), options: vec![("public".into(), OptionValue::Bool(true))], focused: "name".into(), typed: "we".into() });
        assert_eq!(parse(br#"{"type":4,"id":"1","application_id":"2","token":"t","data":{"name":"logs","options":[]}}"#).unwrap_err().rule, "focused");
        assert_eq!(parse(b"{}").unwrap_err().field, "body");
        assert_eq!(parse(br#"{"type":2,"id":"x","application_id":"2","token":"t"}"#).unwrap_err().field, "id");
    }
}
