//! `xferd`: argument parsing, logging, signals and dispatch. The work is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory as _, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use xferd::admin::user::PasswordSource;
use xferd::{Config, ServerState};

/// TLS-secured, authenticated file transfer and chat daemon.
#[derive(Parser)]
#[command(name = "xferd", version, about)]
struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults apply.
    #[arg(long, short, global = true, env = "XFERD_CONFIG", value_name = "FILE")]
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
    Init,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the certificate fingerprint that clients pin.
    Fingerprint,
    /// Print a shell completion script: `xferd completions bash > /etc/bash_completion.d/xferd`.
    Completions(xfer_clidoc::CompletionsArgs),
    /// Write man pages: xferd.1 and one per subcommand into DIR, or xferd.1 to stdout.
    Man(xfer_clidoc::ManArgs),
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
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xferd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    apply_overrides(cli, &mut config);
    config.validate()?;
    Ok(config)
}

fn apply_overrides(cli: &Cli, config: &mut Config) {
    if let Some(listen) = &cli.listen {
        config.listen = listen.clone();
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let source = |stdin: bool| {
        if stdin {
            PasswordSource::Stdin
        } else {
            PasswordSource::Prompt
        }
    };
    match &cli.command {
        None | Some(Command::Serve) => serve(load_config(&cli)?),
        // These describe the command line itself: no config file, no data directory.
        Some(Command::Completions(args)) => {
            Ok(xfer_clidoc::print_completions(Cli::command(), args)?)
        }
        Some(Command::Man(args)) => Ok(xfer_clidoc::print_man(Cli::command(), args)?),
        Some(Command::Init) => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("xferd.toml"));
            let report = xferd::admin::init::init(&path, |c| apply_overrides(&cli, c))?;
            if report.wrote_config {
                println!("wrote {}", path.display());
            } else {
                println!("kept existing {}", path.display());
            }
            if report.generated_cert {
                println!("generated a self-signed certificate");
            }
            println!("certificate fingerprint {}", report.fingerprint);
            Ok(())
        }
        Some(Command::Fingerprint) => {
            println!(
                "{}",
                xferd::admin::fingerprint::fingerprint(&load_config(&cli)?)?
            );
            Ok(())
        }
        Some(Command::User(cmd)) => {
            let config = load_config(&cli)?;
            match cmd {
                UserCommand::Add {
                    name,
                    password_stdin,
                } => {
                    xferd::admin::user::add(&config, name, source(*password_stdin))?;
                    println!("added user {name}");
                }
                UserCommand::Passwd {
                    name,
                    password_stdin,
                } => {
                    xferd::admin::user::passwd(&config, name, source(*password_stdin))?;
                    println!("changed password of {name}; their sessions were ended");
                }
                UserCommand::Del { name } => {
                    xferd::admin::user::del(&config, name)?;
                    println!("deleted user {name}; their sessions were ended");
                }
                UserCommand::List => {
                    for user in xferd::admin::user::list(&config)? {
                        println!("{user}");
                    }
                }
            }
            Ok(())
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = config.listen_addr().expect("validated");
        let state = Arc::new(ServerState::open(config).await?);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        // Tests and scripts read these two lines instead of polling the port.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "xferd {} listening on {bound}",
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(out, "certificate fingerprint {}", state.fingerprint)?;
        out.flush()?;
        drop(out);
        info!(%bound, fingerprint = %state.fingerprint, "listening");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        xferd::serve(state, listener, shutdown).await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        info!("stopped");
        Ok(())
    })
}

/// SIGINT or SIGTERM starts a graceful drain; a second one exits at once.
async fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop xferd with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = int.recv() => info!("SIGINT received, shutting down"),
    }
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal, exiting immediately");
    std::process::exit(1);
}
