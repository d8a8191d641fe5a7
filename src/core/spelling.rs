//! One way to write how a fieldless enum is spelled: `string_enum!` declares the enum with each variant's text and
//! derives the rest (`ALL`, `NAMES`, `as_str`, `parse`, `Display`), so a spelling is written once and read back by
//! the same table.

/// Declares a fieldless enum whose variants are spelled by string literals:
///
/// ```ignore
/// string_enum! {
///     /// The docs and derives of the enum, as usual.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Door { Api = "api", Cli = "cli" }
/// }
/// ```
///
/// gives `Door::ALL` (every variant, in declaration order), `Door::NAMES` (their spellings, in the same order),
/// `as_str(self)`, `Display` (the spelling) and `parse(&str) -> Option<Self>` (exactly a spelling, nothing else).
/// Written `pub enum GuestType for "type" { … }`, `parse` is a door's: `Result<Self, FieldError>` naming that field
/// with rule `enum` and the message `RULE` ("must be one of: vm, lxc"). The enum must be `Copy`.
macro_rules! string_enum {
    (@common
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            /// Each variant's spelling, in the order of `ALL`.
            pub const NAMES: [&'static str; [$($text),+].len()] = [$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn spelled(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident for $field:literal {
            $(#[$fmeta:meta])* $first:ident = $first_text:literal
            $(, $(#[$vmeta:meta])* $variant:ident = $text:literal)* $(,)?
        }
    ) => {
        $crate::core::spelling::string_enum!(@common
            $(#[$meta])* $vis enum $name { $(#[$fmeta])* $first = $first_text $(, $(#[$vmeta])* $variant = $text)* }
        );

        impl $name {
            /// What a door says when a value is none of the spellings.
            pub const RULE: &'static str = concat!("must be one of: ", $first_text $(, ", ", $text)*);

            pub fn parse(s: &str) -> Result<Self, $crate::core::validation::FieldError> {
                Self::spelled(s).ok_or_else(|| $crate::core::validation::FieldError::new($field, "enum", Self::RULE))
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $crate::core::spelling::string_enum!(@common $(#[$meta])* $vis enum $name { $($(#[$vmeta])* $variant = $text),+ });

        impl $name {
            /// The variant spelled exactly `s`.
            pub fn parse(s: &str) -> Option<Self> {
                Self::spelled(s)
            }
        }
    };
}

pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    string_enum! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Plain {
            One = "one",
            /// Documented.
            Two = "two",
        }
    }

    string_enum! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Field for "kind" {
            A = "a",
            B = "b",
        }
    }

    #[test]
    fn each_spelling_reads_back_and_nothing_else_does() {
        assert_eq!(Plain::ALL, [Plain::One, Plain::Two]);
        assert_eq!(Plain::NAMES, ["one", "two"]);
        assert!(Plain::ALL.iter().all(|p| Plain::parse(p.as_str()) == Some(*p) && p.to_string() == p.as_str()));
        assert_eq!(Plain::parse("One"), None);
        assert_eq!(Field::parse("b"), Ok(Field::B));
        let e = Field::parse("c").unwrap_err();
        assert_eq!((e.field.as_str(), e.rule, e.message.as_str()), ("kind", "enum", "must be one of: a, b"));
        assert_eq!((Field::RULE, Field::NAMES, Field::ALL), ("must be one of: a, b", ["a", "b"], [Field::A, Field::B]));
    }
}
