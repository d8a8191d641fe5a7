//! Request parameters as PVE wants them on the wire: `application/x-www-form-urlencoded`, booleans as `0`/`1`, and the `urlencoded` format of `sshkeys`.

use std::fmt::Display;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The characters PVE's `urlencoded` format leaves literal: `[-%a-zA-Z0-9_.!~*'()]` (`%` only as
/// the escape itself). Everything else is escaped, like JavaScript's `encodeURIComponent`.
const URLENCODED_FORMAT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'!').remove(b'~').remove(b'*').remove(b'\'').remove(b'(').remove(b')');

/// Encodes raw `authorized_keys` text for QEMU's `sshkeys` parameter (PVE format `urlencoded`):
/// space `%20`, newline `%0A`, `+` `%2B`, `=` `%3D`, `@` `%40`, `/` `%2F`. The form encoding of
/// the body then escapes the `%` again (`%25`), which PVE undoes before checking the format.
pub fn encode_sshkeys(authorized_keys: &str) -> String {
    utf8_percent_encode(authorized_keys, URLENCODED_FORMAT).to_string()
}

/// Decodes a stored `sshkeys` value back to `authorized_keys` text.
pub(crate) fn decode_sshkeys(encoded: &str) -> String {
    percent_encoding::percent_decode_str(encoded).decode_utf8_lossy().into_owned()
}

/// Ordered request parameters.
#[derive(Debug, Default, Clone)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Adds `key=value`.
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.pairs.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds `key=value` when there is a value.
    pub fn opt(self, key: &str, value: Option<impl Display>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// A boolean as PVE 7, 8 and 9 all accept it: `1` / `0`.
    pub fn flag(self, key: &str, value: bool) -> Self {
        self.set(key, if value { "1" } else { "0" })
    }

    /// A boolean when given.
    pub fn opt_flag(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.flag(key, v),
            None => self,
        }
    }

    /// A boolean sent only when true (for parameters whose default is false).
    pub fn flag_if(self, key: &str, value: bool) -> Self {
        if value {
            self.flag(key, true)
        } else {
            self
        }
    }

    /// A list joined with `sep` (`;` for tags, `,` for `delete`), sent only when not empty.
    pub fn list(self, key: &str, values: &[String], sep: &str) -> Self {
        if values.is_empty() {
            self
        } else {
            self.set(key, values.join(sep))
        }
    }

    /// `a=1&b=x+y` (form encoding: space as `+`, everything else outside `[A-Za-z0-9*-._]` escaped).
    pub fn encode(&self) -> String {
        serde_urlencoded::to_string(&self.pairs).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshkeys_use_pves_urlencoded_format() {
        let keys = "ssh-ed25519 AAAAC3Nz+a/b= me@host with spaces\nssh-rsa AAAAB3Nza== other";
        let enc = encode_sshkeys(keys);
        assert_eq!(
            enc,
            "ssh-ed25519%20AAAAC3Nz%2Ba%2Fb%3D%20me%40host%20with%20spaces%0Assh-rsa%20AAAAB3Nza%3D%3D%20other"
        );
        assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-%_.!~*'()".contains(&b)));
        assert_eq!(encode_sshkeys("a-b_c.d!e~f*g'h(i)j%"), "a-b_c.d!e~f*g'h(i)j%25");
        assert_eq!(encode_sshkeys("ü"), "%C3%BC");
        assert_eq!(decode_sshkeys(&enc), keys);
    }

    #[test]
    fn form_bodies_encode_booleans_as_0_1_and_escape_again() {
        let f = Form::new()
            .set("newid", 101)
            .flag("full", true)
            .flag("start", false)
            .opt_flag("onboot", None)
            .flag_if("purge", false)
            .opt("name", Some("web 1"))
            .opt("storage", None::<&str>)
            .list("tags", &["a".into(), "b".into()], ";")
            .list("delete", &[], ",")
            .set("sshkeys", encode_sshkeys("ssh-ed25519 AA+/= c d"));
        assert_eq!(
            f.encode(),
            "newid=101&full=1&start=0&name=web+1&tags=a%3Bb&sshkeys=ssh-ed25519%2520AA%252B%252F%253D%2520c%2520d"
        );
        assert!(Form::new().is_empty());
    }
}
