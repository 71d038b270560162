//! The `clicktermd` command line: parses arguments, loads and validates the configuration, sets up
//! logging and hands over to the library. Exit codes: 0 success, 1 failure, 2 usage or configuration
//! error.
#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use clicktermd::config::{Config, DEFAULT_CONFIG_TOML, LogFormat};
use clicktermd::model::{Actor, Domain, Name, Username};
use clicktermd::{admins, integrations, store};

#[derive(Parser)]
#[command(
    name = "clicktermd",
    version,
    about = "Self-hosted clickwrap consent and signed webhooks"
)]
struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults and CLICKTERMD_* variables apply.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory, overriding storage.data_dir.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server and the webhook dispatcher (the default).
    Serve,
    /// Write a commented default configuration file and create the database.
    Init {
        /// Overwrite an existing configuration file.
        #[arg(long)]
        force: bool,
    },
    /// Manage admin users and tokens.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage integrations.
    Integration {
        #[command(subcommand)]
        command: IntegrationCommand,
    },
    /// Copy the database consistently to PATH (safe while the server runs).
    Backup { path: PathBuf },
    /// Explain whether webhooks could be sent to URL under the callback-URL policy, without sending
    /// anything. Exit 0 allowed, 1 refused, 2 usage or configuration error.
    CheckUrl { url: String },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin user; prints a generated password unless --password-stdin.
    Create {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an admin user's password (ends their sessions); prints a generated one unless --password-stdin.
    SetPassword {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Admin bearer tokens for scripts.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it, alone, on standard output.
    Create {
        /// A name for the audit log.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List the tokens: id, name, creation time (the tokens themselves are not kept).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (from `admin token list`): it is refused from now on.
    Revoke {
        /// The token's id.
        id: i64,
    },
}

#[derive(Subcommand)]
enum IntegrationCommand {
    /// Create an integration and print its App ID, App Key (shown once) and signing secret.
    Create {
        #[arg(long)]
        name: String,
        /// An allowed domain for the SDK endpoints (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// The webhook callback URL, judged by the callback-URL policy (DNS included) before anything is
        /// written.
        #[arg(long)]
        callback_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List integrations.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// A failure that is the caller's to fix (exit 2) rather than the program's (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Refused>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("clicktermd: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Version = command {
        println!(
            "clicktermd {} (schema {})",
            env!("CARGO_PKG_VERSION"),
            store::SCHEMA_VERSION
        );
        return Ok(());
    }
    // `init` writes the file that --config names, so it starts from the defaults (and the environment)
    // instead of reading it.
    let file = if matches!(command, Command::Init { .. }) {
        None
    } else {
        cli.config.as_deref()
    };
    let mut config = Config::load(file, std::env::vars()).map_err(|e| UsageError(e.to_string()))?;
    if let Some(dir) = cli.data_dir {
        config.storage.data_dir = dir;
    }
    init_logging(&config, matches!(command, Command::Serve));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Init { force } => init(&config, cli.config.as_deref(), force).await,
            Command::Admin { command } => admin(&config, command).await,
            Command::Integration { command } => integration(&config, command).await,
            Command::Backup { path } => backup(&config, &path),
            Command::CheckUrl { url } => check_url(&config, &url).await,
            Command::Version => unreachable!("handled above"),
        }
    })
}

/// Logs go to standard error. Commands other than `serve` log only warnings, so their standard output
/// stays clean for scripts. Colours only on a terminal: under systemd standard error is the journal,
/// where escape codes would be stored as text.
fn init_logging(config: &Config, serving: bool) {
    let level = if serving {
        config.log.level.as_str()
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    clicktermd::run(config, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn init(config: &Config, path: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let path = path.unwrap_or(Path::new("clicktermd.toml"));
    if path.exists() && !force {
        return Err(UsageError(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        ))
        .into());
    }
    std::fs::write(path, DEFAULT_CONFIG_TOML)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let store = clicktermd::open_store(config)?;
    println!("wrote {}", path.display());
    println!("database {}", store.path().display());
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((clicktermd::credentials::random_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
}

async fn admin(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let store = clicktermd::open_store(config)?;
    match command {
        AdminCommand::Create {
            username,
            password_stdin,
        } => {
            let user = Username::parse(&username).map_err(UsageError)?;
            let (password, generated) = read_password(password_stdin)?;
            admins::create_user(&store, &Actor::local("cli"), user, password.clone())
                .await
                .map_err(usage_if_invalid)?;
            if generated {
                println!("{password}");
            }
        }
        AdminCommand::SetPassword {
            username,
            password_stdin,
        } => {
            let user = Username::parse(&username).map_err(UsageError)?;
            let (password, generated) = read_password(password_stdin)?;
            admins::set_password(
                &store,
                &config.storage.data_dir,
                &Actor::local("cli"),
                user,
                password.clone(),
            )
            .await
            .map_err(usage_if_invalid)?;
            if generated {
                println!("{password}");
            }
        }
        AdminCommand::Token {
            command: TokenCommand::Create { name },
        } => {
            let token = admins::create_token(&store, &Actor::local("cli"), &name)
                .await
                .map_err(usage_if_invalid)?;
            println!("{token}");
        }
        AdminCommand::Token {
            command: TokenCommand::List { json },
        } => {
            let tokens = admins::list_tokens(&store).await?;
            if json {
                let items: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id": t.id, "name": t.name, "createdAt": t.created_at.to_rfc3339()})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                println!("{:>6}  {:<24}  NAME", "ID", "CREATED");
                for t in &tokens {
                    println!("{:>6}  {:<24}  {}", t.id, t.created_at.to_rfc3339(), t.name);
                }
            }
        }
        AdminCommand::Token {
            command: TokenCommand::Revoke { id },
        } => {
            admins::revoke_token(&store, &Actor::local("cli"), id).await?;
            println!("revoked admin token {id}");
        }
    }
    Ok(())
}

async fn integration(config: &Config, command: IntegrationCommand) -> anyhow::Result<()> {
    let store = clicktermd::open_store(config)?;
    match command {
        IntegrationCommand::Create {
            name,
            domains,
            callback_url,
            json,
        } => {
            let name = Name::parse(&name).map_err(|e| UsageError(format!("--name: {e}")))?;
            let domains = domains
                .iter()
                .map(|d| Domain::parse(d).map_err(|e| UsageError(format!("--domain: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let callback = match callback_url {
                None => None,
                Some(raw) => {
                    let guard = clicktermd::dispatch::guard::UrlGuard::from_config(
                        &config.webhooks,
                        Some(config.server.listen),
                    )
                    .map_err(|e| anyhow::anyhow!(e))?;
                    Some(guard.admit(&raw).await.map_err(|r| {
                        UsageError(format!("--callback-url refused ({}): {r}", r.code()))
                    })?)
                }
            };
            let created =
                integrations::create(&store, &Actor::local("cli"), name, domains, callback).await?;
            if json {
                let out = serde_json::json!({
                    "appId": created.integration.app_id,
                    "appKey": created.app_key,
                    "signingSecret": created.signing_secret,
                });
                println!("{out}");
            } else {
                println!("App ID:         {}", created.integration.app_id);
                println!(
                    "App Key:        {}   (shown once; store it now)",
                    created.app_key
                );
                println!("Signing secret: {}", created.signing_secret);
            }
        }
        IntegrationCommand::List { json } => {
            let list = integrations::list(&store).await?;
            let mut out = std::io::stdout().lock();
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "appId": i.app_id, "name": i.name.as_str(), "status": i.status.as_str(),
                            "createdAt": i.created_at.to_rfc3339(),
                            "callbackUrl": i.callback_url.as_ref().map(|u| u.as_str()),
                            "webhookDeliveryEnabled": i.webhook_delivery_enabled,
                            "domains": i.domains.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
            } else {
                for i in &list {
                    writeln!(
                        out,
                        "{}  {:<8}  {}  {}",
                        i.app_id,
                        i.status.as_str(),
                        i.created_at,
                        i.name.as_str()
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn backup(config: &Config, dest: &Path) -> anyhow::Result<()> {
    let src = config.database_path();
    if !src.exists() {
        bail!(
            "no database at {} (check --data-dir or storage.data_dir)",
            src.display()
        );
    }
    store::backup(&src, dest)?;
    println!("backed up {} to {}", src.display(), dest.display());
    Ok(())
}

/// A refusal that is the answer, not a failure of the program: exit 1 with the reason on stdout.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

async fn check_url(config: &Config, url: &str) -> anyhow::Result<()> {
    match clicktermd::dispatch::check_url(&config.webhooks, config.server.listen, url).await {
        Ok(explanation) => {
            println!("{explanation}");
            Ok(())
        }
        Err(reason) => {
            println!("{reason}");
            Err(Refused(reason).into())
        }
    }
}

fn usage_if_invalid(e: clicktermd::error::Error) -> anyhow::Error {
    match e {
        clicktermd::error::Error::Invalid { .. } | clicktermd::error::Error::Conflict(_) => {
            UsageError(e.to_string()).into()
        }
        other => other.into(),
    }
}
