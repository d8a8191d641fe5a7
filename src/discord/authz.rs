//! Who may do what from Discord: the guild and the member's roles, re-checked on every interaction (pure).

use crate::config::discord::{DiscordSettings, Snowflake};

use super::command::Need;
use super::interaction::Interaction;

/// The rules, from `[discord]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub guild_ids: Vec<Snowflake>,
    /// Empty: everyone in a configured guild may read.
    pub read_roles: Vec<Snowflake>,
    /// Empty: nobody may change anything.
    pub change_roles: Vec<Snowflake>,
}

impl Policy {
    pub fn from_settings(s: &DiscordSettings) -> Policy {
        Policy { guild_ids: s.guild_ids.clone(), read_roles: s.read_roles.clone(), change_roles: s.change_roles.clone() }
    }
}

/// Why an interaction is refused; shown to the caller only (ephemeral).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("pvedeploy does not take commands in direct messages; use a server where it is set up")]
    DirectMessage,
    #[error("pvedeploy is not set up for this server")]
    WrongGuild,
    #[error("the interaction has no user")]
    NoUser,
    #[error("you need one of the roles allowed to read deployments")]
    CannotRead,
    #[error("you need one of the roles allowed to change deployments (deploy, redeploy, roll back, stop, start, destroy)")]
    CannotChange,
}

/// Whether the caller of `i` may do something that needs `need`.
pub fn authorize(policy: &Policy, i: &Interaction, need: Need) -> Result<(), Refusal> {
    let guild = i.guild_id.ok_or(Refusal::DirectMessage)?;
    if !policy.guild_ids.contains(&guild) {
        return Err(Refusal::WrongGuild);
    }
    if i.caller.is_none() {
        return Err(Refusal::NoUser);
    }
    let has = |roles: &[Snowflake]| i.roles.iter().any(|r| roles.contains(r));
    match need {
        Need::Change if has(&policy.change_roles) => Ok(()),
        Need::Change => Err(Refusal::CannotChange),
        // Changing implies reading.
        Need::Read if policy.read_roles.is_empty() || has(&policy.read_roles) || has(&policy.change_roles) => Ok(()),
        Need::Read => Err(Refusal::CannotRead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::command::parse_command;
    use crate::discord::interaction::{Caller, Kind, OptionValue};

    const GUILD: Snowflake = Snowflake(100);
    const READER: Snowflake = Snowflake(1);
    const CHANGER: Snowflake = Snowflake(2);

    fn policy(read_roles: Vec<Snowflake>) -> Policy {
        Policy { guild_ids: vec![GUILD], read_roles, change_roles: vec![CHANGER] }
    }

    fn from(guild: Option<Snowflake>, roles: Vec<Snowflake>) -> Interaction {
        Interaction {
            id: Snowflake(9),
            application_id: Snowflake(8),
            token: crate::config::Secret::new("t".into()),
            guild_id: guild,
            caller: Some(Caller { id: Snowflake(7), name: "ada".into() }),
            roles,
            kind: Kind::Ping,
        }
    }

    /// Every command, as a user would type it.
    fn all_commands() -> Vec<(&'static str, Vec<(String, OptionValue)>)> {
        let name = || vec![("name".to_string(), OptionValue::Text("web".into()))];
        vec![
            ("deploy", name()),
            ("status", vec![]),
            ("list", vec![]),
            ("logs", name()),
            ("redeploy", name()),
            ("rollback", name()),
            ("stop", name()),
            ("start", name()),
            ("destroy", name()),
            ("resources", vec![]),
        ]
    }

    #[test]
    fn every_command_allowed_refused_by_role_guild_and_dm() {
        let p = policy(vec![READER]);
        for (cmd, opts) in all_commands() {
            let need = parse_command(cmd, &opts).unwrap().need();
            let check = |guild, roles| authorize(&p, &from(guild, roles), need);
            // allowed role
            assert_eq!(check(Some(GUILD), vec![CHANGER]), Ok(()), "/{cmd} with the change role");
            // reader role: reads only
            let as_reader = check(Some(GUILD), vec![READER]);
            match need {
                Need::Read => assert_eq!(as_reader, Ok(()), "/{cmd}"),
                Need::Change => assert_eq!(as_reader, Err(Refusal::CannotChange), "/{cmd}"),
            }
            // missing role
            let none = check(Some(GUILD), vec![Snowflake(55)]);
            assert_eq!(none, Err(if need == Need::Read { Refusal::CannotRead } else { Refusal::CannotChange }), "/{cmd}");
            // wrong guild, even with the right role id
            assert_eq!(check(Some(Snowflake(101)), vec![CHANGER]), Err(Refusal::WrongGuild), "/{cmd}");
            // DM
            assert_eq!(check(None, vec![]), Err(Refusal::DirectMessage), "/{cmd}");
        }
    }

    #[test]
    fn empty_read_roles_let_everyone_in_the_guild_read_but_not_change() {
        let p = policy(vec![]);
        assert_eq!(authorize(&p, &from(Some(GUILD), vec![]), Need::Read), Ok(()));
        assert_eq!(authorize(&p, &from(Some(GUILD), vec![]), Need::Change), Err(Refusal::CannotChange));
        let nobody = Policy { change_roles: vec![], ..p };
        assert_eq!(authorize(&nobody, &from(Some(GUILD), vec![CHANGER]), Need::Change), Err(Refusal::CannotChange), "no change roles: nobody changes");
    }
}
