//! Admin users, sessions and bearer tokens: who may use the admin API and the dashboard.
//! Password hashing (argon2id, deliberately slow) always runs on a blocking thread.

use std::path::Path;

use crate::credentials::{self, ADMIN_TOKEN_PREFIX, SecretDigest};
use crate::error::{Error, Result};
use crate::model::{Actor, Name, Username};
use crate::store::audit::Audit;
use crate::store::{Store, StoreError, admin};

/// The name of the user created at first start.
pub const INITIAL_ADMIN: &str = "admin";
/// The file in the data directory that holds the first-start password until it is changed.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";
pub const MIN_PASSWORD_CHARS: usize = 12;

async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || credentials::hash_password(&password))
        .await
        .map_err(|e| Error::Store(StoreError::Task(e.to_string())))
}

fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// On a database with no admin user, creates `admin` with a random password, writes it to a 0600 file
/// in the data directory and returns it so the caller can show it once.
pub async fn ensure_initial_admin(store: &Store, data_dir: &Path) -> Result<Option<String>> {
    if store.admin_count().await? > 0 {
        return Ok(None);
    }
    let password = credentials::random_password();
    let phc = hash(password.clone()).await?;
    let user = Username::parse(INITIAL_ADMIN).expect("the initial user name is valid");
    let audit = Audit::new(&Actor::local("system"), "admin.create")
        .target(INITIAL_ADMIN)
        .detail("first start");
    let created = store.create_first_admin(user, phc, audit).await?;
    if !created {
        return Ok(None);
    }
    write_private_file(
        &data_dir.join(INITIAL_PASSWORD_FILE),
        &format!("{password}\n"),
    )
    .map_err(|e| Error::Store(StoreError::Io(e)))?;
    Ok(Some(password))
}

fn write_private_file(path: &Path, text: &str) -> std::result::Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub async fn create_user(
    store: &Store,
    actor: &Actor,
    username: Username,
    password: String,
) -> Result<()> {
    check_password(&password)?;
    let phc = hash(password).await?;
    let name = username.as_str().to_string();
    let audit = Audit::new(actor, "admin.create").target(&name);
    let created = store.create_admin(username, phc, audit).await?;
    if created {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "admin user {name:?} already exists"
        )))
    }
}

/// Sets a new password; the user's sessions end. Removes the first-start password file if present.
pub async fn set_password(
    store: &Store,
    data_dir: &Path,
    actor: &Actor,
    username: Username,
    password: String,
) -> Result<()> {
    check_password(&password)?;
    let phc = hash(password).await?;
    let is_initial = username.as_str() == INITIAL_ADMIN;
    let audit = Audit::new(actor, "admin.set_password").target(username.as_str());
    let done = store.set_admin_password(username, phc, audit).await?;
    if !done {
        return Err(Error::NotFound("admin user"));
    }
    if is_initial {
        let _ = std::fs::remove_file(data_dir.join(INITIAL_PASSWORD_FILE));
    }
    Ok(())
}

/// Admin tokens listed at most (they are made by hand, one per script or person).
pub const MAX_TOKENS_LISTED: u32 = 1000;

/// Mints an admin bearer token named `name` (shown in the audit log as `token:NAME`) and returns it;
/// only its digest is kept.
pub async fn create_token(store: &Store, actor: &Actor, name: &str) -> Result<String> {
    let name = Name::parse(name).map_err(|e| Error::invalid("name", e))?;
    let token = credentials::random_token(ADMIN_TOKEN_PREFIX);
    let digest = SecretDigest::of(&token);
    let audit = Audit::new(actor, "admin.token.create").target(name.as_str());
    store
        .create_admin_token(digest, name.as_str().to_string(), audit)
        .await?;
    Ok(token)
}

pub async fn list_tokens(store: &Store) -> Result<Vec<admin::TokenInfo>> {
    Ok(store.admin_tokens(MAX_TOKENS_LISTED).await?)
}

/// Revokes the admin token `id`: requests bearing it are refused from now on.
pub async fn revoke_token(store: &Store, actor: &Actor, id: i64) -> Result<()> {
    let audit = Audit::new(actor, "admin.token.revoke").detail(format!("token {id}"));
    let revoked = store.revoke_admin_token(id, audit).await?;
    if revoked {
        Ok(())
    } else {
        Err(Error::NotFound("admin token"))
    }
}

/// Checks a user name and password; on success starts a session and returns its id (the cookie value).
/// The password is checked in `slot` (the caller's bound on checks at once).
pub async fn login(
    store: &Store,
    username: &str,
    password: &str,
    ttl_secs: u64,
    slot: credentials::CheckSlot,
) -> Result<Option<String>> {
    let user = store.admin_login_facts(username).await?;
    let (user_id, phc) = match user {
        Some((id, phc)) => (Some(id), Some(phc)),
        None => (None, None),
    };
    let pw = password.to_string();
    let ok = slot.verify(pw, phc).await;
    let Some(user_id) = user_id.filter(|_| ok) else {
        return Ok(None);
    };
    let session = credentials::random_token("");
    let digest = SecretDigest::of(&session);
    store.start_session(digest, user_id, ttl_secs).await?;
    Ok(Some(session))
}

pub async fn logout(store: &Store, session: &str) -> Result<()> {
    let digest = SecretDigest::of(session);
    Ok(store.end_session(digest).await?)
}

/// Who is behind a session cookie or a bearer token, as the audit log names them.
pub async fn session_actor(store: &Store, session: &str) -> Result<Option<String>> {
    let digest = SecretDigest::of(session);
    Ok(store.session_user(digest).await?)
}

pub async fn token_actor(store: &Store, token: &str) -> Result<Option<String>> {
    let digest = SecretDigest::of(token);
    Ok(store
        .admin_token_name(digest)
        .await?
        .map(|name| format!("token:{name}")))
}
