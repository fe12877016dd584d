//! `xferd user add|del|passwd|list`: edits the password file under its lock.
//!
//! Passwords are read twice from the terminal, or once from stdin with
//! `--password-stdin`; they are hashed with argon2id before anything is written.
//! None of them creates a data directory unless asked (`user add --create`): a missing
//! one almost always means the wrong config, and a new empty one is invisible to the
//! running daemon.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

use crate::Config;
use crate::accounts::{PasswordFile, UserName, hash_password};
use crate::config::discover::Loaded;

/// Shortest password accepted. Length is the one rule worth enforcing (NIST 800-63B).
pub const MIN_PASSWORD_LEN: usize = 8;

/// Where a new password comes from.
#[derive(Debug, Clone, Copy)]
pub enum PasswordSource {
    /// Prompt twice on the terminal.
    Prompt,
    /// One line from standard input.
    Stdin,
}

/// `user add NAME`.
pub fn add(config: &Config, name: &str, source: PasswordSource) -> anyhow::Result<()> {
    let name: UserName = name.parse()?;
    // Fail before prompting if the name is taken (the update below checks again).
    if PasswordFile::load(&config.password_file())?
        .get(name.as_str())
        .is_some()
    {
        bail!("user `{name}` already exists; change the password with `xferd user passwd {name}`");
    }
    let phc = hash_password(&read_new_password(source)?)?;
    PasswordFile::update(&config.password_file(), |f| f.add(&name, phc))?;
    Ok(())
}

/// `user passwd NAME`; existing sessions of the user stop working.
pub fn passwd(config: &Config, name: &str, source: PasswordSource) -> anyhow::Result<()> {
    let name: UserName = name.parse()?;
    // Fail before prompting if the user does not exist.
    if PasswordFile::load(&config.password_file())?
        .get(name.as_str())
        .is_none()
    {
        bail!("no user `{name}`; see `xferd user list`");
    }
    let phc = hash_password(&read_new_password(source)?)?;
    PasswordFile::update(&config.password_file(), |f| f.set(&name, phc))?;
    Ok(())
}

/// `user del NAME`; existing sessions of the user stop working.
pub fn del(config: &Config, name: &str) -> anyhow::Result<()> {
    PasswordFile::update(&config.password_file(), |f| f.remove(name))?;
    Ok(())
}

/// `user list`: names in file order.
pub fn list(config: &Config) -> anyhow::Result<Vec<UserName>> {
    Ok(PasswordFile::load(&config.password_file())?.users())
}

/// Checks, before any prompt, that the data directory and the password file's directory
/// exist; with `create`, makes them (mode 0700) instead.
///
/// # Errors
/// One line naming the directory, where its path came from, and what to do.
pub fn require_data_dir(loaded: &Loaded, create: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let config = &loaded.config;
    let file = config.password_file();
    let dirs = [Some(config.data_dir.as_path()), file.parent()];
    for dir in dirs.into_iter().flatten() {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            continue;
        }
        if !create {
            let what = if dir == config.data_dir {
                "data directory"
            } else {
                "password file directory"
            };
            bail!(
                "{what} `{}` (from {}) does not exist; point at the server's config with `xferd --config FILE user …`, or start a new server there with `xferd user add --create NAME`",
                dir.display(),
                loaded.data_dir_origin()
            );
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating `{}`", dir.display()))?;
    }
    Ok(())
}

/// How many times the terminal asks before giving up, as passwd(1) does.
const PROMPT_TRIES: usize = 3;

fn read_new_password(source: PasswordSource) -> anyhow::Result<String> {
    match source {
        PasswordSource::Stdin => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading password from stdin")?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let password = line.strip_suffix('\r').unwrap_or(line).to_owned();
            check_password(&password)?;
            Ok(password)
        }
        PasswordSource::Prompt => {
            if !std::io::stdin().is_terminal() {
                bail!("no terminal to ask for the password; use --password-stdin");
            }
            let mut tries = 0;
            loop {
                tries += 1;
                match prompt_twice() {
                    Ok(password) => return Ok(password),
                    Err(why) if tries < PROMPT_TRIES => eprintln!("{why}; try again"),
                    Err(why) => bail!("{why}; {PROMPT_TRIES} tries, nothing was changed"),
                }
            }
        }
    }
}

/// One round at the terminal: the password, checked, then its repetition.
fn prompt_twice() -> anyhow::Result<String> {
    let first = rpassword::prompt_password("New password: ").context("reading password")?;
    check_password(&first)?;
    let second = rpassword::prompt_password("Repeat password: ").context("reading password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        bail!("password too short: use at least {MIN_PASSWORD_LEN} characters");
    }
    Ok(())
}
