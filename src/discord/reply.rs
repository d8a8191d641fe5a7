//! A typed reply (content, embeds, buttons, ephemeral) and its Discord JSON: interaction responses and message bodies.

use serde_json::{json, Value};

/// Discord's message flag for "only the caller sees this".
pub const EPHEMERAL: u64 = 64;
/// Discord refuses longer message contents.
pub const MAX_CONTENT: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    pub title: String,
    pub description: String,
    pub fields: Vec<(String, String)>,
    pub color: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonStyle {
    Secondary = 2,
    Danger = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub custom_id: String,
    pub style: ButtonStyle,
}

/// What pvedeploy says back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    pub embeds: Vec<Embed>,
    /// One row of buttons; an empty list removes earlier buttons when a message is edited.
    pub buttons: Vec<Button>,
    pub ephemeral: bool,
}

impl Reply {
    pub fn text(content: impl Into<String>) -> Reply {
        Reply { content: content.into(), ..Reply::default() }
    }

    pub fn private(content: impl Into<String>) -> Reply {
        Reply { content: content.into(), ephemeral: true, ..Reply::default() }
    }

    /// The message body (for a response's `data`, a follow-up edit or a channel message). Mentions
    /// are disabled: names and log lines come from users and must not ping anyone.
    pub fn message_json(&self) -> Value {
        let mut m = json!({
            "content": truncate(&self.content, MAX_CONTENT),
            "allowed_mentions": {"parse": []},
            "embeds": self.embeds.iter().map(|e| json!({
                "title": truncate(&e.title, 256),
                "description": truncate(&e.description, 4096),
                "color": e.color,
                "fields": e.fields.iter().take(25).map(|(n, v)| json!({"name": truncate(n, 256), "value": truncate(v, 1024), "inline": true})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "components": if self.buttons.is_empty() { json!([]) } else {
                json!([{"type": 1, "components": self.buttons.iter().map(|b| json!({"type": 2, "style": b.style as u8, "label": b.label, "custom_id": b.custom_id})).collect::<Vec<_>>()}])
            },
        });
        if self.ephemeral {
            m["flags"] = json!(EPHEMERAL);
        }
        m
    }
}

/// `PONG`.
pub fn pong() -> Value {
    json!({"type": 1})
}

/// An immediate answer (`CHANNEL_MESSAGE_WITH_SOURCE`).
pub fn immediate(r: &Reply) -> Value {
    json!({"type": 4, "data": r.message_json()})
}

/// "Thinking…" (`DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE`); the message is completed by editing `@original`.
pub fn deferred(ephemeral: bool) -> Value {
    if ephemeral {
        json!({"type": 5, "data": {"flags": EPHEMERAL}})
    } else {
        json!({"type": 5})
    }
}

/// A button press acknowledged (`DEFERRED_UPDATE_MESSAGE`); the message with the buttons is edited later.
pub fn deferred_update() -> Value {
    json!({"type": 6})
}

/// `s` cut to at most `max` characters (an ellipsis marks the cut).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_discords_shapes() {
        assert_eq!(pong(), json!({"type": 1}));
        assert_eq!(deferred(false), json!({"type": 5}));
        assert_eq!(deferred(true), json!({"type": 5, "data": {"flags": 64}}));
        let r = Reply { buttons: vec![Button { label: "Destroy".into(), custom_id: "destroy:x:n".into(), style: ButtonStyle::Danger }], ..Reply::private("sure?") };
        let v = immediate(&r);
        assert_eq!(v["type"], 4);
        assert_eq!(v["data"]["flags"], 64);
        assert_eq!(v["data"]["allowed_mentions"], json!({"parse": []}));
        assert_eq!(v["data"]["components"][0]["components"][0], json!({"type": 2, "style": 4, "label": "Destroy", "custom_id": "destroy:x:n"}));
    }

    #[test]
    fn content_is_cut_to_discords_limit() {
        let long = "x".repeat(3000);
        let v = Reply::text(long).message_json();
        assert_eq!(v["content"].as_str().unwrap().chars().count(), MAX_CONTENT);
        assert_eq!(truncate("short", 10), "short");
    }
}
