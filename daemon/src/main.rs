//! `xferd`: argument parsing, logging, signals and dispatch. The work is in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory as _, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use xferd::admin::control;
use xferd::admin::user::PasswordSource;
use xferd::config::discover::{self, Loaded, Overrides};
use xferd::control::Control;
use xferd::control::server::ControlSocket;

use xferd::metrics::Exporter;
use xferd::reload::{ConfigLoader, Reloader};
use xferd::{Config, ServerState};

/// Prints a line on stdout, ignoring a closed or full stdout: what it reports has
/// already happened, and a broken pipe must not turn that into a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// TLS-secured, authenticated file transfer and chat daemon.
#[derive(Parser)]
#[command(name = "xferd", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it: $XFERD_CONFIG, else ./xferd.toml, else
    /// /etc/xferd/xferd.toml, else built-in defaults.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding `listen` (port 0 picks a free port and prints it).
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory, overriding `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Write a default config, create the data directory and certificate.
    Init {
        /// Issue the certificate from a local CA (created in the data directory's `ca/`
        /// if missing, kept if present), for browsers and `xfer login --ca`.
        #[arg(long)]
        ca: bool,
        #[command(flatten)]
        names: NameArgs,
    },
    /// A local certificate authority, so devices that install it trust xferd by name.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the certificate fingerprint that clients pin.
    Fingerprint,
    /// Validate the config and the files it names, then print `config OK: FILE`.
    Check,
    /// Show the running daemon's connections, transfers and chat members.
    Status {
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// End every connection of USER on the running daemon now.
    Kick {
        /// Account name.
        user: String,
    },
    /// Make the running daemon re-read its configuration (as SIGHUP does).
    Reload,
    /// Copy every user's files from the data directory into the bucket of [storage.s3].
    ///
    /// Reads `<data_dir>/users/*/files` and writes each file, its manifest (digests,
    /// modified time) and each empty directory into the bucket configured in
    /// [storage.s3] of the same config, in the layout of `backend = "s3"`. The local data
    /// is only read: nothing is ever deleted or modified there. Run it again at any time:
    /// files already in the bucket (same size and digest) are skipped, so an interrupted
    /// migration resumes. Uploads in progress are not migrated: they are listed, and
    /// their users push those files again. Steps: add [storage.s3] to the config, run
    /// `xferd migrate`, stop xferd, run `xferd migrate` again (it copies only what
    /// changed), set `backend = "s3"`, start xferd.
    Migrate {
        /// Only list what would be copied; write nothing to the bucket.
        #[arg(long)]
        dry_run: bool,
        /// Only this user's files.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Print a shell completion script: `xferd completions bash > /etc/bash_completion.d/xferd`.
    Completions(xfer_clidoc::CompletionsArgs),
    /// Write man pages: xferd.1 and one per subcommand into DIR, or xferd.1 to stdout.
    Man(xfer_clidoc::ManArgs),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA in the data directory's `ca/`, issue the server certificate from it,
    /// and print the CA's path and fingerprint.
    Init {
        /// Replace an existing CA (devices that trust it must then install the new one).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        names: NameArgs,
    },
    /// Issue a new server certificate from the existing CA (more names, renewal); the CA
    /// and the names of the current certificate are kept.
    Issue {
        #[command(flatten)]
        names: NameArgs,
    },
    /// Print the CA's path, fingerprint and expiry, and whether xferd's certificate is
    /// issued by it.
    Show,
}

/// Names for a certificate issued by the local CA, besides the built-in ones.
#[derive(clap::Args)]
struct NameArgs {
    /// Another DNS name the server is reached by, e.g. `--name nas.lan` (repeatable).
    #[arg(long = "name", value_name = "NAME", value_parser = xferd::admin::ca::parse_name)]
    names: Vec<String>,
    /// Another IP address the server is reached at, e.g. `--ip 192.168.1.20` (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<std::net::IpAddr>,
}

impl NameArgs {
    fn all(&self) -> Vec<String> {
        let ips = self.ips.iter().map(ToString::to_string);
        self.names.iter().cloned().chain(ips).collect()
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.ips.is_empty()
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user (prompts twice for the password).
    Add {
        /// Account name: letters, digits, '_', '-', '.'; up to 32.
        name: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Create the data directory if it does not exist (a new server).
        #[arg(long)]
        create: bool,
    },
    /// Delete a user; their sessions stop working.
    Del {
        /// Account name.
        name: String,
    },
    /// Change a user's password; their sessions stop working.
    Passwd {
        /// Account name.
        name: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
}

fn main() -> ExitCode {
    xfer_glibc::reexec_with(&[
        xfer_glibc::FIXED_MMAP_THRESHOLD,
        xfer_glibc::REP_MOVSB_THRESHOLD,
    ]);
    let cli = Cli::parse();
    xferd::logging::init();
    // Two rustls providers are linked (ring, ours; aws-lc-rs, object_store's HTTP
    // client): xferd's own configs name ring explicitly, and this makes it the choice of
    // any library that builds a config without naming one, instead of a panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "xferd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    /// The config by the documented discovery order, with the command-line overrides.
    fn load(&self) -> anyhow::Result<Loaded> {
        let loaded = discover::load(self.config.as_deref())?;
        Ok(loaded.with_overrides(&self.overrides())?)
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None | Some(Command::Serve) => {
            let loaded = cli.load()?;
            let loader = config_loader(&loaded, cli.overrides());
            serve(loaded.config, loader)
        }
        // These describe the command line itself: no config file, no data directory.
        Some(Command::Completions(args)) => {
            Ok(xfer_clidoc::print_completions(Cli::command(), args)?)
        }
        Some(Command::Man(args)) => Ok(xfer_clidoc::print_man(Cli::command(), args)?),
        Some(Command::Init { ca, names }) => init(&cli, *ca, names),
        Some(Command::Ca(cmd)) => ca(&cli.load()?, cmd),
        Some(Command::Fingerprint) => {
            say!("{}", xferd::admin::fingerprint::describe(&cli.load()?)?);
            Ok(())
        }
        Some(Command::Check) => {
            let loaded = cli.load()?;
            xferd::admin::check::check(&loaded.config)?;
            say!("config OK: {}", loaded.source);
            Ok(())
        }
        Some(Command::Status { json }) => control::status(&cli.load()?.config, *json),
        Some(Command::Kick { user }) => control::kick(&cli.load()?.config, user),
        Some(Command::Reload) => {
            // The daemon would refuse this file too; say that nothing changed.
            let loaded = cli.load().map_err(|e| {
                anyhow::anyhow!(
                    "{e:#}; the running xferd was not asked and keeps its configuration"
                )
            })?;
            control::reload(&loaded.config)
        }
        Some(Command::User(cmd)) => user(&cli.load()?, cmd),
        Some(Command::Migrate { dry_run, user }) => {
            let loaded = cli.load()?;
            let options = xferd::admin::migrate::Options {
                user: user.clone(),
                dry_run: *dry_run,
            };
            xferd::admin::migrate::migrate(&loaded.config, &loaded.source.to_string(), &options)?;
            Ok(())
        }
    }
}

fn init(cli: &Cli, with_ca: bool, names: &NameArgs) -> anyhow::Result<()> {
    if !with_ca && !names.is_empty() {
        anyhow::bail!("--name and --ip are names for a CA-issued certificate; add --ca");
    }
    let path = discover::init_target(cli.config.as_deref());
    let overrides = cli.overrides();
    let extra = names.all();
    let report = xferd::admin::init::init(&path, &overrides, with_ca.then_some(&extra[..]))?;
    if report.wrote_config {
        say!("wrote {}", path.display());
    } else if overrides.listen.is_some() || overrides.data_dir.is_some() {
        say!(
            "kept existing {} (--listen/--data-dir applied to this run only; edit the file to keep them)",
            path.display()
        );
    } else {
        say!("kept existing {}", path.display());
    }
    if report.created_data_dir {
        say!("created data directory {}", report.data_dir.display());
    }
    if let Some(cert) = &report.generated_cert {
        say!("generated a self-signed certificate {}", cert.display());
    }
    if let Some(ca) = &report.ca {
        say_ca(ca);
    } else {
        say!("certificate fingerprint {}", report.fingerprint);
    }
    let cmd = format!("xferd --config {}", path.display());
    say!("next steps:");
    say!("  add a user:     {cmd} user add NAME");
    say!("  start xferd:    {cmd}");
    if let Some(ca) = &report.ca {
        say!(
            "  install {} on each device (README, \"Trusting the local CA\"); `xfer login USER@HOST --ca ca.pem`",
            ca.ca_cert.display()
        );
    } else {
        say!("  tell users the fingerprint above; `xfer login` shows it on first contact");
    }
    Ok(())
}

fn ca(loaded: &Loaded, cmd: &CaCommand) -> anyhow::Result<()> {
    use xferd::admin::ca;
    let report = match cmd {
        CaCommand::Init { force, names } => ca::init(loaded, &names.all(), *force)?,
        CaCommand::Issue { names } => ca::issue(loaded, &names.all())?,
        CaCommand::Show => {
            let status = ca::show(&loaded.config)?;
            say!("CA {}", status.ca_cert.display());
            say!("CA fingerprint {}", status.ca_fingerprint);
            say!("  SHA-256 {}", status.ca_fingerprint.to_colon_hex());
            say!("CA valid until {}", status.ca_not_after);
            match status.served {
                Some((names, until)) => say!(
                    "certificate {} issued by this CA for {}; valid until {until}",
                    status.cert.display(),
                    names.join(", ")
                ),
                None => say!(
                    "certificate {} is not issued by this CA; issue one with `xferd ca issue`",
                    status.cert.display()
                ),
            }
            return Ok(());
        }
    };
    say_ca(&report);
    say!(
        "a running xferd serves the new certificate after `xferd reload` (or SIGHUP); clients that pinned the old fingerprint log in again with `--ca` or `--fingerprint`"
    );
    Ok(())
}

/// What a CA command did: the CA (path, fingerprint in both forms) and the certificate.
fn say_ca(r: &xferd::admin::ca::CaReport) {
    let made = if r.created_ca { "created" } else { "kept" };
    say!(
        "{made} CA {} (key {}, mode 0600)",
        r.ca_cert.display(),
        r.ca_key.display()
    );
    say!("CA fingerprint {}", r.ca_fingerprint);
    say!("  SHA-256 {}", r.ca_fingerprint.to_colon_hex());
    say!("CA valid until {}", r.ca_not_after);
    say!(
        "issued certificate {} for {}; valid until {}",
        r.cert.display(),
        r.issued.names.join(", "),
        r.issued.not_after
    );
    say!("certificate fingerprint {}", r.issued.identity.fingerprint);
}

fn user(loaded: &Loaded, cmd: &UserCommand) -> anyhow::Result<()> {
    use xferd::admin::user;
    let source = |stdin: bool| {
        if stdin {
            PasswordSource::Stdin
        } else {
            PasswordSource::Prompt
        }
    };
    let create = matches!(cmd, UserCommand::Add { create: true, .. });
    user::require_data_dir(loaded, create)?;
    let config = &loaded.config;
    let file = config.password_file();
    match cmd {
        UserCommand::Add {
            name,
            password_stdin,
            ..
        } => {
            user::add(config, name, source(*password_stdin))?;
            say!("added user {name} to {}", file.display());
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            user::passwd(config, name, source(*password_stdin))?;
            say!(
                "changed password of {name} in {}; their sessions were revoked",
                file.display()
            );
            control::end_connections(config, name);
        }
        UserCommand::Del { name } => {
            // Archive first: if that fails, the account and its data stay as they were
            // and the command can be run again; a new account of the name never finds
            // the old home. Sessions still open write into the archive, then end.
            let archived = xferd::admin::archive::archive_user(config, name)?;
            user::del(config, name)?;
            say!(
                "deleted user {name} from {}; their sessions were revoked",
                file.display()
            );
            say!("{}", archived.summary(name));
            control::end_connections(config, name);
        }
        UserCommand::List => {
            for name in user::list(config)? {
                say!("{name}");
            }
        }
    }
    Ok(())
}

/// How a reload reads the configuration: the file the daemon started with (or the
/// built-in defaults), resolved the same way, with the same command-line overrides.
fn config_loader(loaded: &Loaded, overrides: Overrides) -> (Option<PathBuf>, ConfigLoader) {
    let path = loaded.source.path().map(Path::to_path_buf);
    let source = path.clone();
    let load = move || -> anyhow::Result<Config> {
        let mut config = match &path {
            Some(p) => Config::load(p)?,
            None => {
                let mut config = Config::default();
                config.data_dir = discover::absolute(&config.data_dir);
                config
            }
        };
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    };
    (source, Arc::new(load))
}

fn serve(config: Config, (source, loader): (Option<PathBuf>, ConfigLoader)) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = config.listen_addr().expect("validated");
        let control_path = config.control_socket_path();
        // Before anything touches the data directory a live daemon may be using.
        ControlSocket::refuse_if_running(&control_path)?;
        let state = Arc::new(ServerState::open(config).await?);
        let control_socket = ControlSocket::bind(&control_path)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        let metrics = Exporter::bind(&state.config().metrics, state.metrics.clone()).await?;
        let reloader = Arc::new(Reloader::new(state.clone(), source, loader));
        let shutdown = CancellationToken::new();
        reload_on_sighup(reloader.clone(), shutdown.clone());
        stop_on_signal(shutdown.clone());
        // Tests and scripts read these lines instead of polling the port. Best effort: a
        // closed stdout must not stop a daemon that is otherwise fine.
        say!("xferd {} listening on {bound}", env!("CARGO_PKG_VERSION"));
        say!("certificate fingerprint {}", state.fingerprint());
        if let Some(m) = &metrics {
            say!("metrics listening on {}", m.local_addr());
        }
        let _ = std::io::stdout().flush();
        info!(%bound, fingerprint = %state.fingerprint(), "listening");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        info!(path = %control_socket.path().display(), "control socket ready");
        let control = Arc::new(Control::new(state.clone(), reloader));
        let control_task = tokio::spawn(control_socket.serve(control, shutdown.clone()));
        if let Some(m) = metrics {
            tokio::spawn(m.run(shutdown.clone()));
        }
        xferd::serve(state, listener, shutdown).await;
        let _ = control_task.await;
        info!("stopped");
        Ok(())
    })
}

/// Each SIGHUP reloads the configuration; the outcome is logged by the reloader.
///
/// The handler is installed here, synchronously, so that a SIGHUP sent right after
/// `READY=1` reloads instead of killing the daemon (SIGHUP's default action).
/// Once the drain has started, SIGHUP is ignored: a reload would tell systemd READY=1
/// after STOPPING=1.
fn reload_on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler; reload with `xferd reload`");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            let _ = reloader.reload("SIGHUP").await;
        }
    });
}

/// SIGINT or SIGTERM starts a graceful drain; a second one exits at once. The handlers
/// are installed before this returns, so a SIGTERM right after `READY=1` drains too.
fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(term), Ok(int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop xferd with SIGKILL");
        return;
    };
    tokio::spawn(stop_on(term, int, token));
}

/// The drain starts before anything is logged, so that no trouble with the log can
/// delay it.
async fn stop_on(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    token: CancellationToken,
) {
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    token.cancel();
    // systemd hears it when the drain starts, not when it ends.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!(signal = name, "{name} received, shutting down");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal, exiting immediately");
    std::process::exit(1);
}
