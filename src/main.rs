//! The `clicktermd` command line: parses arguments, loads and validates the configuration, sets up
//! logging and hands over to the library. Exit codes: 0 success, 1 failure, 2 usage or configuration
//! error.
#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clicktermd::config::{Config, DEFAULT_CONFIG_TOML, LogFormat};
use clicktermd::model::{Actor, Domain, Name, Role, Username};
use clicktermd::store::admin::UserChanges;
use clicktermd::{admins, integrations, store};

#[derive(Parser)]
#[command(
    name = "clicktermd",
    version,
    about = "Self-hosted clickwrap consent and signed webhooks"
)]
struct Cli {
    /// Configuration file (TOML). Without it, ./clicktermd.toml if it exists, else the built-in
    /// defaults; CLICKTERMD_* variables apply on top.
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
    Serve {
        /// Address and port to serve on, overriding server.listen (e.g. 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR", value_parser = clicktermd::config::parse_listen)]
        listen: Option<std::net::SocketAddr>,
    },
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
    Backup {
        /// Where the copy goes; an existing file is never overwritten.
        path: PathBuf,
    },
    /// Copy this SQLite database, every table and row (sessions aside), into the empty PostgreSQL
    /// database URL, checking each table's row count and digest; stop the server first. Afterwards
    /// run the nodes with storage.backend = "postgres" and storage.postgres_url = URL.
    MigrateStore {
        /// The target, a libpq URL (postgres://user:password@host:port/database?sslmode=…); it must
        /// hold no tables. Its password is never printed.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Re-read the database and check the proof-of-consent ledger: every verified event's evidence
    /// against its link, every link against the one before. Exit 0 intact, 1 broken (the first broken
    /// or missing link is named), 2 usage or configuration error.
    VerifyLedger {
        /// A chain head noted earlier, POSITION:HASH (from the dashboard, /metrics or an export):
        /// also check that the chain still holds it, so that nothing up to it was rewritten.
        #[arg(long, value_name = "POSITION:HASH")]
        anchor: Option<String>,
    },
    /// Write the evidence of every verified event whose action time is in [FROM, TO] (RFC 3339) to
    /// standard output, newest first, as NDJSON or CSV; the chain head it ends at goes to standard
    /// error (and, for NDJSON, into the last line).
    Export(ExportWanted),
    /// Explain whether webhooks could be sent to URL under the callback-URL policy, without sending
    /// anything. Exit 0 allowed, 1 refused, 2 usage or configuration error.
    CheckUrl {
        /// The callback URL to judge, e.g. https://hooks.example.com/clickterm.
        url: String,
    },
    /// A local HTTPS webhook receiver for trying webhooks out: it verifies each delivery's signature
    /// and prints it. Makes its own certificate and says how a local clicktermd trusts it.
    WebhookReceiver {
        /// The integration's signing secret (the whole whsec_… string). Without it, only the
        /// certificate and the settings are made and printed.
        #[arg(long, value_name = "SECRET")]
        secret: Option<String>,
        /// The port on 127.0.0.1 to listen on.
        #[arg(long, value_name = "PORT", default_value_t = 9443)]
        port: u16,
        /// Directory for the receiver's CA, certificate and key (made once, then reused).
        #[arg(long, value_name = "DIR", default_value = "clicktermd-receiver")]
        dir: PathBuf,
        /// Also write a clicktermd configuration to FILE: the defaults plus the two settings that
        /// let a local server trust and reach this receiver.
        #[arg(long, value_name = "FILE")]
        write_config: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin user; prints a generated password unless --password-stdin.
    Create {
        /// The new user's name.
        #[arg(long)]
        username: String,
        /// What the user may do: owner (also manages users), admin (everything else) or viewer
        /// (reads, never a secret, changes nothing).
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the admin users: name, role, whether disabled, live sessions.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change an admin user's role (the last enabled owner stays one).
    SetRole {
        /// The user whose role changes.
        #[arg(long)]
        username: String,
        /// owner, admin or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Disable an admin user: they cannot log in and their sessions end (not the last enabled owner).
    Disable {
        /// The user to disable.
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled admin user again.
    Enable {
        /// The user to enable.
        #[arg(long)]
        username: String,
    },
    /// List an admin user's live sessions: id, start, expiry, address, browser.
    Sessions {
        /// The user whose sessions are listed.
        #[arg(long)]
        username: String,
    },
    /// End an admin user's sessions: the one with --id, or all.
    EndSessions {
        /// The user whose sessions end.
        #[arg(long)]
        username: String,
        /// The session's id (from `admin sessions`); all of them without it.
        #[arg(long)]
        id: Option<String>,
    },
    /// Set an admin user's password (ends their sessions); prints a generated one unless --password-stdin.
    SetPassword {
        /// The user whose password is set.
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
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
        /// What the token may do: owner, admin or viewer.
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
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
        /// The integration's (app's) name.
        #[arg(long)]
        name: String,
        /// An allowed domain for the SDK endpoints (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// The webhook callback URL, judged by the callback-URL policy (DNS included) before anything is
        /// written.
        #[arg(long)]
        callback_url: Option<String>,
        /// Print JSON: {"appId", "appKey", "signingSecret"}.
        #[arg(long)]
        json: bool,
    },
    /// List integrations.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A failure that is the caller's to fix (exit 2) rather than the program's (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// The most blocking threads the runtime keeps (tokio's default is 512): the store's reads, which
/// take one only once a pooled connection is theirs (at most 8 at once), and the few other blocking
/// tasks (a certificate's PDF, a URL check, a writer queue that is full). Under load on two cores
/// tokio starts a new thread whenever no idle one has woken yet, and the pool grew to 60 threads for
/// those 8 connections, each with its stack and its share of the allocator's arenas; beyond this
/// bound a task waits in tokio's queue for a thread instead.
const BLOCKING_THREADS: usize = 16;

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

/// The file name `serve` and the other commands look for in the current directory, and `init`
/// writes, when no `--config` is given.
const LOCAL_CONFIG: &str = "clicktermd.toml";

/// Where the configuration came from: said in logs and messages, repeated in the first-start banner.
struct Invocation {
    /// The file read: `--config`, or ./clicktermd.toml found in the current directory.
    file: Option<PathBuf>,
    /// Whether `file` was given with --config (rather than found).
    flag: bool,
    data_dir_flag: Option<PathBuf>,
    /// `CLICKTERMD_STORAGE__DATA_DIR` was set.
    data_dir_env: bool,
}

impl Invocation {
    /// `clicktermd` with the options that point another command at the same server.
    fn command(&self) -> String {
        let mut cmd = "clicktermd".to_string();
        if let (Some(file), true) = (&self.file, self.flag) {
            cmd.push_str(&format!(" --config {}", shell_word(file)));
        }
        if let Some(dir) = &self.data_dir_flag {
            cmd.push_str(&format!(" --data-dir {}", shell_word(dir)));
        }
        cmd
    }

    /// Which configuration file applies, in words.
    fn config_source(&self) -> String {
        match (&self.file, self.flag) {
            (Some(f), true) => format!("the configuration file {} (--config)", f.display()),
            (Some(f), false) => format!(
                "the configuration file {} (found in the current directory)",
                f.display()
            ),
            (None, _) => format!(
                "no configuration file (no --config, and no ./{LOCAL_CONFIG} in the current \
                 directory): the built-in defaults"
            ),
        }
    }

    /// Where the data directory came from, in words.
    fn data_dir_source(&self, config: &Config) -> String {
        if self.data_dir_flag.is_some() {
            "the data directory given with --data-dir".to_string()
        } else if self.data_dir_env {
            "the data directory from CLICKTERMD_STORAGE__DATA_DIR".to_string()
        } else if let Some(file) = &self.file
            && config.storage.data_dir != Config::default().storage.data_dir
        {
            format!("storage.data_dir in {}", file.display())
        } else {
            "the default data directory, in the current directory".to_string()
        }
    }
}

/// A path as one shell word (quoted when it needs to be).
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve { listen: None });
    if let Command::Version = command {
        println!(
            "clicktermd {} (schema {})",
            env!("CARGO_PKG_VERSION"),
            store::SCHEMA_VERSION
        );
        return Ok(());
    }
    // The receiver stands for a customer's endpoint: it reads no clicktermd configuration.
    if let Command::WebhookReceiver {
        secret,
        port,
        dir,
        write_config,
    } = command
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(webhook_receiver(
            secret,
            port,
            &dir,
            write_config.as_deref(),
        ));
    }
    let is_init = matches!(command, Command::Init { .. });
    // `init` writes the file that --config names, so it starts from the defaults (and the environment)
    // instead of reading it. The others read --config, else ./clicktermd.toml when there is one.
    let (file, flag) = match (&cli.config, is_init) {
        (_, true) => (None, false),
        (Some(path), false) => (Some(path.clone()), true),
        (None, false) => {
            let local = PathBuf::from(LOCAL_CONFIG);
            (local.is_file().then_some(local), false)
        }
    };
    let mut config =
        Config::load(file.as_deref(), std::env::vars()).map_err(|e| UsageError(e.to_string()))?;
    let invocation = Invocation {
        file,
        flag,
        data_dir_flag: cli.data_dir.clone(),
        data_dir_env: std::env::var_os("CLICKTERMD_STORAGE__DATA_DIR").is_some(),
    };
    if let Some(dir) = cli.data_dir {
        config.storage.data_dir = dir;
    }
    if let Command::Serve {
        listen: Some(addr), ..
    } = command
    {
        config.server.listen = addr;
    }
    init_logging(&config, matches!(command, Command::Serve { .. }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve { .. } => serve(config, &invocation).await,
            Command::Init { force } => init(&config, cli.config.as_deref(), force).await,
            Command::Admin { command } => admin(&config, &invocation, command).await,
            Command::Integration { command } => integration(&config, &invocation, command).await,
            Command::Backup { path } => backup(&config, &invocation, &path).await,
            Command::CheckUrl { url } => check_url(&config, &url).await,
            Command::MigrateStore { to } => migrate_store(&config, &invocation, &to).await,
            Command::VerifyLedger { anchor } => verify_ledger(&config, &invocation, anchor).await,
            Command::Export(wanted) => export(&config, &invocation, wanted).await,
            Command::WebhookReceiver { .. } | Command::Version => unreachable!("handled above"),
        }
    })
}

/// The store of a server that exists: commands other than `serve` and `init` never create a database,
/// since one made in the wrong directory is a server nobody runs (a token minted there is refused).
async fn existing_store(config: &Config, how: &Invocation) -> anyhow::Result<store::Store> {
    let db = config.database_path();
    if config.storage.backend == clicktermd::config::Backend::Sqlite && !db.exists() {
        let dir = std::path::absolute(&config.storage.data_dir)
            .unwrap_or_else(|_| config.storage.data_dir.clone());
        return Err(UsageError(format!(
            "no clicktermd database in {} ({}; configuration: {}). Point this command at the \
             server's data with --data-dir DIR or --config FILE, or run it where the server runs; \
             only `clicktermd serve` and `clicktermd init` create a new database",
            dir.display(),
            how.data_dir_source(config),
            how.config_source(),
        ))
        .into());
    }
    clicktermd::open_store(config).await
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

async fn serve(config: Config, how: &Invocation) -> anyhow::Result<()> {
    match &how.file {
        Some(_) => tracing::info!("configuration: {}", how.config_source()),
        None => tracing::info!(
            "configuration: {}, with any CLICKTERMD_* variables",
            how.config_source()
        ),
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen, or --listen)",
                config.server.listen
            )
        })?;
    clicktermd::run_as(config, listener, shutdown_signal(), &how.command()).await
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
    let path = path.unwrap_or(Path::new(LOCAL_CONFIG));
    if path.exists() && !force {
        return Err(UsageError(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        ))
        .into());
    }
    std::fs::write(path, DEFAULT_CONFIG_TOML)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let store = clicktermd::open_store(config).await?;
    println!("wrote {}", path.display());
    println!("database {}", store.describe());
    // How the file is found again: by name in the current directory, or only with --config.
    let found_here = path.parent().is_none_or(|p| {
        p.as_os_str().is_empty() || std::fs::canonicalize(p).ok() == std::env::current_dir().ok()
    }) && path.file_name() == Some(std::ffi::OsStr::new(LOCAL_CONFIG));
    let data_dir = if config.storage.data_dir != Config::default().storage.data_dir {
        format!(" --data-dir {}", shell_word(&config.storage.data_dir))
    } else {
        String::new()
    };
    if found_here {
        println!(
            "`clicktermd{data_dir} serve` started in this directory reads {LOCAL_CONFIG} by itself \
             (as do the other commands); from elsewhere: clicktermd --config {}{data_dir} serve",
            shell_word(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
        );
    } else {
        println!(
            "start the server with: clicktermd --config {}{data_dir} serve (only ./{LOCAL_CONFIG} \
             is read without --config)",
            shell_word(path)
        );
    }
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

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("must be one of {}", Role::spellings()))
}

async fn set_disabled(store: &store::Store, username: &str, disabled: bool) -> anyhow::Result<()> {
    let changes = UserChanges {
        role: None,
        disabled: Some(disabled),
    };
    admins::change_user(store, &Actor::local("cli"), username, changes).await?;
    let state = if disabled { "disabled" } else { "enabled" };
    println!("{username} is {state}");
    Ok(())
}

async fn admin(config: &Config, how: &Invocation, command: AdminCommand) -> anyhow::Result<()> {
    let store = existing_store(config, how).await?;
    match command {
        AdminCommand::Create {
            username,
            role,
            password_stdin,
        } => {
            let user = Username::parse(&username).map_err(UsageError)?;
            let (password, generated) = read_password(password_stdin)?;
            admins::create_user(
                &store,
                &Actor::local("cli"),
                user,
                role,
                Some(password.clone()),
            )
            .await
            .map_err(usage_if_invalid)?;
            if generated {
                println!("{password}");
            }
        }
        AdminCommand::List { json } => {
            let users = admins::list_users(&store).await?;
            if json {
                let items: Vec<_> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "username": u.username,
                            "role": u.role.as_str(),
                            "disabled": u.disabled_at.is_some(),
                            "sessions": u.sessions,
                            "createdAt": u.created_at.to_rfc3339(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                println!("{:<24}  {:<7}  {:<8}  SESSIONS", "USER", "ROLE", "STATE");
                for u in &users {
                    let state = if u.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "enabled"
                    };
                    println!(
                        "{:<24}  {:<7}  {:<8}  {}",
                        u.username, u.role, state, u.sessions
                    );
                }
            }
        }
        AdminCommand::SetRole { username, role } => {
            let changes = UserChanges {
                role: Some(role),
                disabled: None,
            };
            admins::change_user(&store, &Actor::local("cli"), &username, changes).await?;
            println!("{username} is now {role}");
        }
        AdminCommand::Sessions { username } => {
            println!(
                "{:<16}  {:<24}  {:<24}  {:<15}  BROWSER",
                "ID", "STARTED", "EXPIRES", "FROM"
            );
            for s in admins::sessions(&store, &username).await? {
                println!(
                    "{:<16}  {:<24}  {:<24}  {:<15}  {}",
                    s.id,
                    s.created_at.to_rfc3339(),
                    s.expires_at.to_rfc3339(),
                    s.from.as_deref().unwrap_or("-"),
                    s.user_agent.as_deref().unwrap_or("-")
                );
            }
        }
        AdminCommand::EndSessions { username, id } => {
            let ended = admins::end_sessions(&store, &Actor::local("cli"), &username, id).await?;
            println!("ended {ended} session(s) of {username}");
        }
        AdminCommand::Disable { username } => set_disabled(&store, &username, true).await?,
        AdminCommand::Enable { username } => set_disabled(&store, &username, false).await?,
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
                user.as_str(),
                Some(password.clone()),
            )
            .await
            .map_err(usage_if_invalid)?;
            if generated {
                println!("{password}");
            }
        }
        AdminCommand::Token {
            command: TokenCommand::Create { name, role },
        } => {
            // The command line is the machine's operator: it may make any token.
            let cli = Actor::local("cli");
            let token = admins::create_token(&store, &cli, Role::Owner, &name, role)
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
                        serde_json::json!({"id": t.id, "name": t.name, "role": t.role.as_str(), "createdAt": t.created_at.to_rfc3339()})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                println!("{:>6}  {:<24}  {:<7}  NAME", "ID", "CREATED", "ROLE");
                for t in &tokens {
                    println!(
                        "{:>6}  {:<24}  {:<7}  {}",
                        t.id,
                        t.created_at.to_rfc3339(),
                        t.role,
                        t.name
                    );
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

async fn integration(
    config: &Config,
    how: &Invocation,
    command: IntegrationCommand,
) -> anyhow::Result<()> {
    let store = existing_store(config, how).await?;
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

async fn backup(config: &Config, how: &Invocation, dest: &Path) -> anyhow::Result<()> {
    let src = config.database_path();
    let opened = existing_store(config, how).await?;
    if opened.path().is_none() {
        // A PostgreSQL store: refused with the way to back it up.
        opened.backup_to(dest)?;
    }
    drop(opened);
    store::backup(&src, dest)?;
    println!("backed up {} to {}", src.display(), dest.display());
    Ok(())
}

/// `migrate-store --to URL`: the SQLite database of this data directory into PostgreSQL.
async fn migrate_store(config: &Config, how: &Invocation, to: &str) -> anyhow::Result<()> {
    if config.storage.backend != clicktermd::config::Backend::Sqlite {
        return Err(UsageError(
            "migrate-store copies a SQLite database: run it with storage.backend = \"sqlite\" and \
             the data directory of the server being moved"
                .into(),
        )
        .into());
    }
    let target = clicktermd::config::PostgresUrl::new(to);
    // Nothing may write the source while it is copied: the serve lock, held by a running server.
    let _lock = store::ServeLock::acquire(&config.storage.data_dir)
        .map_err(|e| UsageError(format!("{e}; stop the server before migrate-store")))?;
    // Opening brings an older database to the current schema first.
    let source = existing_store(config, how).await?;
    let path = source.path().expect("a SQLite store").to_path_buf();
    drop(source);
    let copied =
        store::transfer::copy(&path, &target, config.storage.postgres_ca_file.as_deref()).await?;
    println!("copied {} into {}", path.display(), target.redacted());
    for (table, rows, digest) in &copied.tables {
        println!("{table:<26} {rows:>10} rows  sha256 {digest}");
    }
    println!(
        "every table's rows and digest agree. Now run the nodes with storage.backend = \"postgres\" \
         and storage.postgres_url = this URL (sessions were not copied: log in again)"
    );
    Ok(())
}

async fn verify_ledger(
    config: &Config,
    how: &Invocation,
    anchor: Option<String>,
) -> anyhow::Result<()> {
    let anchor = anchor
        .map(|a| {
            clicktermd::ledger::parse_head(&a).ok_or_else(|| {
                UsageError(format!(
                    "--anchor {a:?}: expected POSITION:HASH, a position from 1 and 64 hex digits"
                ))
            })
        })
        .transpose()?;
    let store = existing_store(config, how).await?;
    match clicktermd::ledger::check(&store, anchor).await? {
        Ok(head) => {
            println!(
                "ledger intact: {} links, every verified event chained; head {}",
                head.position,
                clicktermd::ledger::head_text(head)
            );
            Ok(())
        }
        Err(broken) => {
            let reason = format!("ledger broken: {broken}");
            println!("{reason}");
            Err(Refused(reason).into())
        }
    }
}

/// What `clicktermd export` is asked for.
#[derive(clap::Args)]
struct ExportWanted {
    /// The earliest action time, e.g. 2026-01-01T00:00:00Z.
    #[arg(long, value_name = "TIME")]
    from: String,
    /// The latest action time (inclusive).
    #[arg(long, value_name = "TIME")]
    to: String,
    /// ndjson (one evidence document per line) or csv.
    #[arg(long, value_name = "FORMAT", default_value = "ndjson")]
    format: String,
    /// Only this integration's events.
    #[arg(long, value_name = "APP_ID")]
    app_id: Option<String>,
    /// Only this template's events.
    #[arg(long, value_name = "ID")]
    template_id: Option<String>,
    /// Only this end user's events.
    #[arg(long, value_name = "ID")]
    end_user_id: Option<String>,
    /// Only ACCEPTED or only DECLINED events.
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
}

async fn export(config: &Config, how: &Invocation, w: ExportWanted) -> anyhow::Result<()> {
    use clicktermd::model::{Action, Timestamp};
    let time = |flag: &str, raw: &str| {
        Timestamp::parse_rfc3339(raw).ok_or_else(|| {
            UsageError(format!(
                "{flag} {raw:?}: expected an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"
            ))
        })
    };
    let (from, to) = (time("--from", &w.from)?, time("--to", &w.to)?);
    if to < from {
        return Err(UsageError("--to must not be before --from".into()).into());
    }
    let format = clicktermd::ledger::ExportFormat::parse(&w.format)
        .ok_or_else(|| UsageError(format!("--format {:?}: ndjson or csv", w.format)))?;
    let action = w
        .status
        .as_deref()
        .map(|s| {
            Action::parse(s)
                .ok_or_else(|| UsageError(format!("--status {s:?}: {}", Action::spellings())))
        })
        .transpose()?;
    let store = existing_store(config, how).await?;
    let integration_id = match &w.app_id {
        None => None,
        Some(app) => Some(
            store
                .integration_row(app)
                .await?
                .ok_or_else(|| UsageError(format!("--app-id {app}: no such integration")))?,
        ),
    };
    let filter = store::events::Filter {
        integration_id,
        template_id: w.template_id,
        end_user_id: w.end_user_id,
        action,
        from: Some(from),
        to: Some(to),
    };
    let mut export = clicktermd::ledger::export(&store, filter, format).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = export.chunks.recv().await {
        out.write_all(&chunk?)?;
    }
    out.flush()?;
    eprintln!(
        "chain head {} (verify with: clicktermd verify-ledger --anchor {})",
        clicktermd::ledger::head_text(export.head),
        clicktermd::ledger::head_text(export.head)
    );
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

async fn webhook_receiver(
    secret: Option<String>,
    port: u16,
    dir: &Path,
    write_config: Option<&Path>,
) -> anyhow::Result<()> {
    use clicktermd::receiver;
    let certs = receiver::certificates(dir)?;
    println!(
        "{} the receiver's certificate (127.0.0.1, ::1, localhost): {}",
        if certs.created { "made" } else { "using" },
        certs.cert_file.display()
    );
    println!("its CA, for clients to trust: {}", certs.ca_file.display());
    let settings = receiver::server_settings(&certs.ca_file);
    match write_config {
        Some(path) if path.exists() => {
            let loaded = Config::load(Some(path), Vec::new()).ok();
            let has = loaded.is_some_and(|c| {
                c.webhooks.extra_ca_file.as_deref() == Some(certs.ca_file.as_path())
                    && c.webhooks
                        .allow_private_cidrs
                        .contains(&"127.0.0.1/32".parse().expect("a CIDR"))
            });
            if !has {
                return Err(UsageError(format!(
                    "{} exists and is left alone: set these two keys in its [webhooks] section \
                     instead, then restart the server:\n  {}\n  {}",
                    path.display(),
                    settings[0],
                    settings[1]
                ))
                .into());
            }
            println!("{} already has the two settings", path.display());
        }
        Some(path) => {
            std::fs::write(path, receiver::server_config(&certs.ca_file))
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "wrote {}: the defaults plus the two settings that let a local clicktermd trust \
                 and reach this receiver",
                path.display()
            );
        }
        None => {
            println!(
                "a clicktermd on this machine delivers here with these settings (restart it after \
                 adding them):\n  [webhooks]\n  {}\n  {}",
                settings[0], settings[1]
            );
        }
    }
    let Some(secret) = secret else {
        println!(
            "callback URL: https://127.0.0.1:{port}/webhooks (any path). Start again with \
             --secret whsec_… (the integration's signing secret) to receive and verify"
        );
        return Ok(());
    };
    if !secret.starts_with("whsec_") {
        eprintln!(
            "clicktermd: warning: a signing secret starts with whsec_; the HMAC key is the whole \
             string as given, not base64-decoded"
        );
    }
    receiver::serve(&certs, port, secret, shutdown_signal(), |addr| {
        println!(
            "listening on https://{addr}/ — callback URL https://{addr}/webhooks (any path); \
             verifying with the secret given; Ctrl-C stops"
        );
    })
    .await
}

fn usage_if_invalid(e: clicktermd::error::Error) -> anyhow::Error {
    match e {
        clicktermd::error::Error::Invalid { .. } | clicktermd::error::Error::Conflict(_) => {
            UsageError(e.to_string()).into()
        }
        other => other.into(),
    }
}
