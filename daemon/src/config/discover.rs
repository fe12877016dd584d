//! Which config file the daemon and every admin command use: one rule, in one place.
//!
//! The order is `--config FILE`, then `$XFERD_CONFIG`, then `./xferd.toml`, then
//! `/etc/xferd/xferd.toml`; with none of them, built-in defaults. A file named by
//! `--config` or `$XFERD_CONFIG` must exist (a typo must not silently fall back to
//! defaults and a second data directory). Paths come back absolute so that messages name
//! the real file, whatever the working directory.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::{Config, ConfigError};

/// The environment variable naming a config file.
pub const ENV_VAR: &str = "XFERD_CONFIG";
/// The config file looked for in the working directory.
pub const LOCAL_FILE: &str = "xferd.toml";
/// The system-wide config file.
pub const SYSTEM_FILE: &str = "/etc/xferd/xferd.toml";

/// How a config file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// `--config FILE`.
    Flag,
    /// `$XFERD_CONFIG`.
    Env,
    /// `./xferd.toml`.
    WorkingDir,
    /// `/etc/xferd/xferd.toml`.
    System,
}

impl Found {
    fn describe(self) -> &'static str {
        match self {
            Found::Flag => "--config",
            Found::Env => "$XFERD_CONFIG",
            Found::WorkingDir => "./xferd.toml",
            Found::System => SYSTEM_FILE,
        }
    }
}

/// Where the configuration in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file (absolute path), and how it was found.
    File(PathBuf, Found),
    /// No file: built-in defaults.
    Defaults,
}

impl Source {
    /// The config file, if there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::File(p, _) => Some(p),
            Source::Defaults => None,
        }
    }
}

impl fmt::Display for Source {
    /// `/etc/xferd/xferd.toml` or `built-in defaults`, for "… from X" messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p, _) => write!(f, "{}", p.display()),
            Source::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// A loaded, path-resolved and validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration (`data_dir` absolute).
    pub config: Config,
    /// Its origin.
    pub source: Source,
    /// Whether `data_dir` was set on the command line rather than by `source`.
    pub data_dir_from_flag: bool,
}

/// Command-line settings that win over the file (`--listen`, `--data-dir`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen ADDR`.
    pub listen: Option<String>,
    /// `--data-dir DIR`, relative to the working directory.
    pub data_dir: Option<PathBuf>,
}

impl Overrides {
    /// Applies them to `config` (a relative `--data-dir` is made absolute).
    pub fn apply(&self, config: &mut Config) {
        if let Some(listen) = &self.listen {
            config.listen.clone_from(listen);
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = absolute(dir);
        }
    }
}

impl Loaded {
    /// Applies command-line overrides and validates the result.
    ///
    /// # Errors
    /// An override that makes the config invalid (`--listen nowhere`).
    pub fn with_overrides(mut self, overrides: &Overrides) -> Result<Loaded, ConfigError> {
        overrides.apply(&mut self.config);
        self.data_dir_from_flag |= overrides.data_dir.is_some();
        self.config.validate()?;
        Ok(self)
    }

    /// Where `data_dir` came from, for messages: `--data-dir`, `/etc/xferd/xferd.toml`
    /// or `built-in defaults (no config file: …)`.
    pub fn data_dir_origin(&self) -> String {
        match &self.source {
            _ if self.data_dir_from_flag => "--data-dir".to_owned(),
            Source::File(p, _) => p.display().to_string(),
            Source::Defaults => format!(
                "built-in defaults; no --config, ${ENV_VAR}, ./{LOCAL_FILE} or {SYSTEM_FILE}"
            ),
        }
    }
}

/// The file `xferd init` writes: `--config`, else `$XFERD_CONFIG`, else `./xferd.toml`
/// (never the system file unless named), absolute.
pub fn init_target(flag: Option<&Path>) -> PathBuf {
    let env = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty());
    let path = flag.map_or_else(
        || env.map_or_else(|| PathBuf::from(LOCAL_FILE), PathBuf::from),
        Path::to_owned,
    );
    absolute(&path)
}

/// Finds the config file by the documented order and loads it (or built-in defaults).
///
/// # Errors
/// A file named by `--config` or `$XFERD_CONFIG` that does not exist; a file that cannot
/// be read, parsed or validated (naming it and the key).
pub fn load(flag: Option<&Path>) -> Result<Loaded, ConfigError> {
    let source = discover(flag)?;
    let config = match &source {
        Source::File(path, _) => Config::load(path)?,
        Source::Defaults => {
            let mut config = Config::default();
            config.data_dir = absolute(&config.data_dir);
            config
        }
    };
    Ok(Loaded {
        config,
        source,
        data_dir_from_flag: false,
    })
}

/// Finds the config file, reading `$XFERD_CONFIG` and the working directory.
///
/// # Errors
/// As [`load`], without reading the file.
pub fn discover(flag: Option<&Path>) -> Result<Source, ConfigError> {
    let env = std::env::var_os(ENV_VAR);
    // An unknown working directory (deleted) leaves relative paths relative.
    let cwd = std::env::current_dir().unwrap_or_default();
    discover_in(flag, env.as_deref(), &cwd, Path::new(SYSTEM_FILE))
}

/// [`discover`] with the environment, working directory and system path given.
fn discover_in(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    cwd: &Path,
    system: &Path,
) -> Result<Source, ConfigError> {
    let env = env.filter(|v| !v.is_empty()).map(Path::new);
    for (explicit, found) in [(flag, Found::Flag), (env, Found::Env)] {
        if let Some(path) = explicit {
            let path = resolve(cwd, path);
            return match exists(&path)? {
                true => Ok(Source::File(path, found)),
                false => Err(ConfigError::Missing {
                    path,
                    via: found.describe(),
                }),
            };
        }
    }
    for (path, found) in [
        (cwd.join(LOCAL_FILE), Found::WorkingDir),
        (system.to_owned(), Found::System),
    ] {
        if exists(&path)? {
            return Ok(Source::File(path, found));
        }
    }
    Ok(Source::Defaults)
}

/// Whether `path` exists; a permission error is reported, not taken as "absent",
/// so that an unreadable `/etc/xferd` never silently means built-in defaults.
fn exists(path: &Path) -> Result<bool, ConfigError> {
    path.try_exists().map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `path` made absolute against the working directory, without `.` components and
/// without resolving symlinks. Left as is if the working directory is unknown.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).map_or_else(|_| path.to_owned(), |p| normalize(&p))
}

/// `path` relative to `base` unless already absolute, without `.` components.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    normalize(&base.join(path))
}

fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_flag_env_working_dir_system_then_defaults() {
        let tmp = tempfile::TempDir::new().unwrap();
        let cwd = tmp.path();
        let (a, b, local, system) = (
            cwd.join("a.toml"),
            cwd.join("b.toml"),
            cwd.join("xferd.toml"),
            cwd.join("system.toml"),
        );
        for f in [&a, &b, &local, &system] {
            std::fs::write(f, "").unwrap();
        }
        let env = Some(b.as_os_str());
        let src = discover_in(Some(&a), env, cwd, &system).unwrap();
        assert_eq!(src, Source::File(a.clone(), Found::Flag));
        let src = discover_in(None, env, cwd, &system).unwrap();
        assert_eq!(src, Source::File(b.clone(), Found::Env));
        // An empty variable counts as unset.
        let src = discover_in(None, Some(OsStr::new("")), cwd, &system).unwrap();
        assert_eq!(src, Source::File(local.clone(), Found::WorkingDir));
        std::fs::remove_file(&local).unwrap();
        let src = discover_in(None, None, cwd, &system).unwrap();
        assert_eq!(src, Source::File(system.clone(), Found::System));
        std::fs::remove_file(&system).unwrap();
        let src = discover_in(None, None, cwd, &system).unwrap();
        assert_eq!(src, Source::Defaults);
        assert_eq!(src.to_string(), "built-in defaults");
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_an_error_naming_it() {
        let tmp = tempfile::TempDir::new().unwrap();
        let (cwd, system) = (tmp.path(), Path::new("/nonexistent/xferd.toml"));
        let err = discover_in(Some(Path::new("nope.toml")), None, cwd, system).unwrap_err();
        let text = err.to_string();
        let full = cwd.join("nope.toml").display().to_string();
        assert!(text.contains(&full) && text.contains("--config"), "{text}");
        let env = Some(OsStr::new("nope.toml"));
        let err = discover_in(None, env, cwd, system).unwrap_err();
        assert!(err.to_string().contains("$XFERD_CONFIG"), "{err}");
    }

    #[test]
    fn a_relative_flag_is_made_absolute() {
        let tmp = tempfile::TempDir::new().unwrap();
        std::fs::write(tmp.path().join("my.toml"), "").unwrap();
        let flag = Path::new("./my.toml");
        let src = discover_in(Some(flag), None, tmp.path(), Path::new("/x")).unwrap();
        assert_eq!(src.path(), Some(tmp.path().join("my.toml").as_path()));
    }

    #[test]
    fn overrides_win_and_messages_say_where_the_data_dir_came_from() {
        let tmp = tempfile::TempDir::new().unwrap();
        let file = tmp.path().join("xferd.toml");
        std::fs::write(&file, "data_dir = \"d\"\n").unwrap();
        let loaded = load(Some(&file)).unwrap();
        assert_eq!(loaded.config.data_dir, tmp.path().join("d"));
        assert_eq!(loaded.data_dir_origin(), file.display().to_string());
        let overrides = Overrides {
            listen: Some("127.0.0.1:1".into()),
            data_dir: Some("/srv/other".into()),
        };
        let loaded = loaded.with_overrides(&overrides).unwrap();
        assert_eq!(loaded.config.listen, "127.0.0.1:1");
        assert_eq!(loaded.config.data_dir, Path::new("/srv/other"));
        assert_eq!(loaded.data_dir_origin(), "--data-dir");
        let bad = Overrides {
            listen: Some("nowhere".into()),
            data_dir: None,
        };
        let err = load(Some(&file)).unwrap().with_overrides(&bad).unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
    }

    #[test]
    fn resolve_joins_relative_and_keeps_absolute() {
        let base = Path::new("/etc/xferd");
        let joined = resolve(base, Path::new("./data"));
        assert_eq!(joined, Path::new("/etc/xferd/data"));
        assert_eq!(joined.to_str(), Some("/etc/xferd/data"));
        assert_eq!(
            resolve(base, Path::new("/var/lib/x")),
            Path::new("/var/lib/x")
        );
    }
}
