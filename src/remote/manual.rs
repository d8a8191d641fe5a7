//! The command line's own documentation, generated from its clap definitions: shell completions (clap_complete)
//! and man pages (clap_mangen).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::RemoteError;

/// Print shell completions: `source <(pvedeploy completions bash)`, or save them where the shell looks.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff), or write one page per command into a folder.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print, e.g. `deploy` or `env set` [default: pvedeploy itself].
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Write pvedeploy.1, pvedeploy-deploy.1, … into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(a: &CompletionsArgs, mut cmd: clap::Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(a.shell, &mut cmd, name, out);
}

pub fn man(a: &ManArgs, cmd: clap::Command, out: &mut dyn Write) -> Result<(), RemoteError> {
    if let Some(dir) = &a.dir {
        std::fs::create_dir_all(dir).map_err(|source| RemoteError::Write { path: dir.clone(), source })?;
        return clap_mangen::generate_to(cmd, dir).map_err(|source| RemoteError::Write { path: dir.clone(), source });
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut page = &cmd;
    for word in &a.command {
        page = page
            .find_subcommand(word)
            .ok_or_else(|| super::arg("COMMAND", format!("{word:?} is not a pvedeploy command (see `pvedeploy --help`)")))?;
    }
    clap_mangen::Man::new(page.clone()).render(out).map_err(|source| RemoteError::Write { path: Path::new("-").to_path_buf(), source })
}
