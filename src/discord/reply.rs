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

/// A button's look ([button styles](https://discord.com/developers/docs/components/reference#button-button-styles)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonStyle {
    Primary = 1,
    Secondary = 2,
    Danger = 4,
}

/// What pressing a button does: an interaction back to us (`custom_id`), or opening a URL (style 5, `Link`: no
/// `custom_id`, no interaction — Discord's [button](https://discord.com/developers/docs/components/reference#button)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Press {
    Custom { custom_id: String, style: ButtonStyle },
    Link { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub press: Press,
}

impl Button {
    pub fn action(label: impl Into<String>, custom_id: impl Into<String>, style: ButtonStyle) -> Button {
        Button { label: label.into(), press: Press::Custom { custom_id: custom_id.into(), style } }
    }

    pub fn link(label: impl Into<String>, url: impl Into<String>) -> Button {
        Button { label: label.into(), press: Press::Link { url: url.into() } }
    }

    fn json(&self) -> Value {
        // labels: at most 80 characters
        let label = truncate(&self.label, 80);
        match &self.press {
            Press::Custom { custom_id, style } => json!({"type": 2, "style": *style as u8, "label": label, "custom_id": custom_id}),
            Press::Link { url } => json!({"type": 2, "style": 5, "label": label, "url": url}),
        }
    }
}

/// A file sent with a message (`files[0]` of a multipart body, as Discord's
/// [uploading files](https://discord.com/developers/docs/reference#uploading-files) describes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// What pvedeploy says back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    pub embeds: Vec<Embed>,
    /// One row of buttons; an empty list removes earlier buttons when a message is edited.
    pub buttons: Vec<Button>,
    pub ephemeral: bool,
    /// A text file, for what does not fit in a message (long logs).
    pub file: Option<Attachment>,
}

impl Reply {
    pub fn text(content: impl Into<String>) -> Reply {
        Reply { content: content.into(), ..Reply::default() }
    }

    pub fn private(content: impl Into<String>) -> Reply {
        Reply { content: content.into(), ephemeral: true, ..Reply::default() }
    }

    /// The message body (for a response's `data`, a follow-up edit or a channel message). Mentions
    /// are disabled: names and log lines come from users and must not ping anyone. With a file, the body names it
    /// as attachment 0 (the `files[0]` part sent beside it).
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
                // an action row holds at most 5 buttons
                json!([{"type": 1, "components": self.buttons.iter().take(5).map(Button::json).collect::<Vec<_>>()}])
            },
        });
        if self.ephemeral {
            m["flags"] = json!(EPHEMERAL);
        }
        if let Some(f) = &self.file {
            m["attachments"] = json!([{"id": 0, "filename": f.filename}]);
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

/// The message a button sits on, replaced at once (`UPDATE_MESSAGE`, callback type 7): `content` and the message's
/// own `components` with every button and select disabled, as an expired confirmation is answered.
/// [Callback types](https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-interaction-callback-type).
pub fn update_disabled(content: &str, components: &Value) -> Value {
    let mut rows = components.as_array().cloned().unwrap_or_default();
    for row in &mut rows {
        if let Some(children) = row.get_mut("components").and_then(Value::as_array_mut) {
            for c in children {
                c["disabled"] = json!(true);
            }
        }
    }
    json!({"type": 7, "data": {"content": truncate(content, MAX_CONTENT), "components": rows, "allowed_mentions": {"parse": []}}})
}

/// The most choices an autocomplete answer may hold.
pub const MAX_CHOICES: usize = 25;

/// Suggestions for the option being typed (`APPLICATION_COMMAND_AUTOCOMPLETE_RESULT`, callback type 8, at most 25
/// choices of a 1-100 character name and a value — Discord's
/// [autocomplete](https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-autocomplete)).
pub fn autocomplete(choices: &[(String, String)]) -> Value {
    let choices: Vec<Value> = choices.iter().take(MAX_CHOICES).map(|(name, value)| json!({"name": truncate(name, 100), "value": value})).collect();
    json!({"type": 8, "data": {"choices": choices}})
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
        let r = Reply { buttons: vec![Button::action("Destroy", "destroy:x:n", ButtonStyle::Danger), Button::link("Open", "http://10.0.0.5")], ..Reply::private("sure?") };
        let v = immediate(&r);
        assert_eq!(v["type"], 4);
        assert_eq!(v["data"]["flags"], 64);
        assert_eq!(v["data"]["allowed_mentions"], json!({"parse": []}));
        assert_eq!(v["data"]["components"][0]["components"][0], json!({"type": 2, "style": 4, "label": "Destroy", "custom_id": "destroy:x:n"}));
        assert_eq!(v["data"]["components"][0]["components"][1], json!({"type": 2, "style": 5, "label": "Open", "url": "http://10.0.0.5"}), "a link button has a url and no custom_id");
        let disabled = update_disabled("expired", &v["data"]["components"]);
        assert_eq!(disabled["type"], 7);
        assert!(disabled["data"]["components"][0]["components"].as_array().unwrap().iter().all(|b| b["disabled"] == true), "{disabled}");
        let many: Vec<(String, String)> = (0..40).map(|n| (format!("app-{n}"), format!("app-{n}"))).collect();
        let a = autocomplete(&many);
        assert_eq!((a["type"].as_u64(), a["data"]["choices"].as_array().unwrap().len()), (Some(8), 25));
    }

    #[test]
    fn content_is_cut_to_discords_limit() {
        let long = "x".repeat(3000);
        let v = Reply::text(long).message_json();
        assert_eq!(v["content"].as_str().unwrap().chars().count(), MAX_CONTENT);
        assert_eq!(truncate("short", 10), "short");
    }
}
