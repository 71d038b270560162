//! Admin users, sessions and bearer tokens: who may use the admin API and the dashboard.
//! Password hashing (argon2id, deliberately slow) always runs on a blocking thread.

use std::path::Path;

use crate::credentials::{self, ADMIN_TOKEN_PREFIX, SecretDigest};
use crate::error::{Error, Result};
use crate::model::{Actor, Name, Role, Username};
use crate::store::admin::{
    self, NewAdmin, SessionInfo, SessionStart, TokenCaller, UserChange, UserChanges,
};
use crate::store::audit::Audit;
use crate::store::{Store, StoreError};

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
    let new = NewAdmin {
        username: user,
        password_hash: phc,
        role: Role::Owner,
        must_change_password: false,
    };
    let created = store.create_first_admin(new, audit).await?;
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

/// Creates an admin user with `role`. With no password, a one-time one is made and returned (shown
/// once): its first session may do nothing but change it.
pub async fn create_user(
    store: &Store,
    actor: &Actor,
    username: Username,
    role: Role,
    password: Option<String>,
) -> Result<Option<String>> {
    let (password, one_time) = match password {
        Some(p) => (p, false),
        None => (credentials::random_password(), true),
    };
    check_password(&password)?;
    let phc = hash(password.clone()).await?;
    let name = username.as_str().to_string();
    let audit = Audit::new(actor, "admin.create")
        .target(&name)
        .detail(format!("role={role}"));
    let new = NewAdmin {
        username,
        password_hash: phc,
        role,
        must_change_password: one_time,
    };
    if !store.create_admin(new, audit).await? {
        return Err(Error::Conflict(format!(
            "admin user {name:?} already exists"
        )));
    }
    Ok(one_time.then_some(password))
}

/// Every admin user, by name.
pub async fn list_users(store: &Store) -> Result<Vec<admin::AdminUser>> {
    Ok(store.admin_users().await?)
}

/// Sets a new password (a one-time one, made and returned, when `password` is none); the user's
/// sessions end. Removes the first-start password file if it was the initial admin's.
pub async fn set_password(
    store: &Store,
    data_dir: &Path,
    actor: &Actor,
    username: &str,
    password: Option<String>,
) -> Result<Option<String>> {
    let (password, one_time) = match password {
        Some(p) => (p, false),
        None => (credentials::random_password(), true),
    };
    check_password(&password)?;
    let phc = hash(password.clone()).await?;
    let action = if one_time {
        "admin.reset_password"
    } else {
        "admin.set_password"
    };
    let audit = Audit::new(actor, action).target(username);
    if !store
        .set_admin_password(username, phc, one_time, audit)
        .await?
    {
        return Err(Error::NotFound("admin user"));
    }
    if username == INITIAL_ADMIN {
        let _ = std::fs::remove_file(data_dir.join(INITIAL_PASSWORD_FILE));
    }
    Ok(one_time.then_some(password))
}

/// An admin user's own password change: `current` must be theirs (checked in `slot`); the new one
/// ends every session of theirs, this one included, and lifts a one-time password's restriction.
pub async fn change_own_password(
    store: &Store,
    data_dir: &Path,
    actor: &Actor,
    (current, new): (String, String),
    slot: credentials::CheckSlot,
) -> Result<bool> {
    check_password(&new)?;
    let user = store.admin_login_facts(&actor.name).await?;
    let phc = user.map(|(_, phc)| phc);
    if !slot.verify(current, phc).await {
        return Ok(false);
    }
    set_password(store, data_dir, actor, &actor.name.clone(), Some(new)).await?;
    Ok(true)
}

fn user_change(change: UserChange) -> Result<()> {
    match change {
        UserChange::Done => Ok(()),
        UserChange::NoSuchUser => Err(Error::NotFound("admin user")),
        UserChange::LastOwner => Err(Error::Conflict(
            "this is the last enabled owner: make another user an owner first".into(),
        )),
    }
}

/// Changes a user's role, or disables or enables them; the last enabled owner stays one.
pub async fn change_user(
    store: &Store,
    actor: &Actor,
    username: &str,
    changes: UserChanges,
) -> Result<()> {
    let mut what = Vec::new();
    if let Some(role) = changes.role {
        what.push(format!("role={role}"));
    }
    if let Some(disabled) = changes.disabled {
        what.push(format!("disabled={disabled}"));
    }
    if what.is_empty() {
        return Err(Error::invalid("role", "give a role or disabled to change"));
    }
    let audit = Audit::new(actor, "admin.update")
        .target(username)
        .detail(what.join(", "));
    user_change(store.change_admin(username, changes, audit).await?)
}

/// Removes a user and their sessions; the last enabled owner stays.
pub async fn delete_user(store: &Store, actor: &Actor, username: &str) -> Result<()> {
    let audit = Audit::new(actor, "admin.delete").target(username);
    user_change(store.delete_admin(username, audit).await?)
}

/// A user's live sessions.
pub async fn sessions(store: &Store, username: &str) -> Result<Vec<SessionInfo>> {
    store
        .admin_sessions(username)
        .await?
        .ok_or(Error::NotFound("admin user"))
}

/// Ends one of a user's sessions (`id` from [`sessions`]) or all of them; how many ended.
pub async fn end_sessions(
    store: &Store,
    actor: &Actor,
    username: &str,
    id: Option<String>,
) -> Result<usize> {
    let detail = id
        .as_ref()
        .map_or("all sessions".to_string(), |id| format!("session {id}"));
    let audit = Audit::new(actor, "admin.sessions.end")
        .target(username)
        .detail(detail);
    let ended = store
        .end_admin_sessions(username, id.clone(), audit)
        .await?
        .ok_or(Error::NotFound("admin user"))?;
    if id.is_some() && ended == 0 {
        return Err(Error::NotFound("session"));
    }
    Ok(ended)
}

/// Admin tokens listed at most (they are made by hand, one per script or person).
pub const MAX_TOKENS_LISTED: u32 = 1000;

/// Mints an admin bearer token named `name` (shown in the audit log as `token:NAME`) with `role`, and
/// returns it; only its digest is kept. Nobody mints a token that may do more than they may.
pub async fn create_token(
    store: &Store,
    actor: &Actor,
    actor_role: Role,
    name: &str,
    role: Role,
) -> Result<String> {
    let name = Name::parse(name).map_err(|e| Error::invalid("name", e))?;
    if !actor_role.allows(role) {
        return Err(Error::Forbidden {
            code: "role_too_high",
            message: format!(
                "a{} {actor_role} cannot make a token with the role {role}",
                if actor_role == Role::Admin { "n" } else { "" }
            ),
        });
    }
    let token = credentials::random_token(ADMIN_TOKEN_PREFIX);
    let digest = SecretDigest::of(&token);
    let audit = Audit::new(actor, "admin.token.create")
        .target(name.as_str())
        .detail(format!("role={role}"));
    store
        .create_admin_token(digest, name.as_str().to_string(), role, audit)
        .await?;
    Ok(token)
}

pub async fn list_tokens(store: &Store) -> Result<Vec<admin::TokenInfo>> {
    Ok(store.admin_tokens(MAX_TOKENS_LISTED).await?)
}

/// Revokes the admin token `id`: requests bearing it are refused from now on.
pub async fn revoke_token(store: &Store, actor: &Actor, id: i64) -> Result<()> {
    let audit = Audit::new(actor, "admin.token.revoke").detail(format!("token {id}"));
    if store.revoke_admin_token(id, audit).await? {
        Ok(())
    } else {
        Err(Error::NotFound("admin token"))
    }
}

/// Checks a user name and password; on success starts a session and returns its id (the cookie value).
/// The password is checked in `slot` (the caller's bound on checks at once). A disabled user is
/// refused like a wrong password.
pub async fn login(
    store: &Store,
    (username, password): (&str, &str),
    ttl_secs: u64,
    slot: credentials::CheckSlot,
    start: SessionStart,
) -> Result<Option<String>> {
    let user = store.admin_login_facts(username).await?;
    let (user_id, phc) = match user {
        Some((id, phc)) => (Some(id), Some(phc)),
        None => (None, None),
    };
    let ok = slot.verify(password.to_string(), phc).await;
    let Some(user_id) = user_id.filter(|_| ok) else {
        return Ok(None);
    };
    let session = credentials::random_token("");
    let digest = SecretDigest::of(&session);
    store
        .start_session(digest, user_id, ttl_secs, start)
        .await?;
    Ok(Some(session))
}

pub async fn logout(store: &Store, session: &str) -> Result<()> {
    let digest = SecretDigest::of(session);
    Ok(store.end_session(digest).await?)
}

/// Who is behind an admin request, and what they may do.
pub struct Caller {
    /// As the audit log names them: the user name, or `token:NAME`.
    pub name: String,
    pub role: Role,
    /// A session opened with a one-time password, which may do nothing but change it.
    pub must_change_password: bool,
    /// Whether this is a user's session (not a bearer token).
    pub by_session: bool,
}

pub async fn session_caller(store: &Store, session: &str) -> Result<Option<Caller>> {
    let digest = SecretDigest::of(session);
    Ok(store.session_user(digest).await?.map(|u| Caller {
        name: u.username,
        role: u.role,
        must_change_password: u.must_change_password,
        by_session: true,
    }))
}

pub async fn token_caller(store: &Store, token: &str) -> Result<Option<Caller>> {
    let digest = SecretDigest::of(token);
    Ok(store
        .admin_token(digest)
        .await?
        .map(|TokenCaller { name, role }| Caller {
            name: format!("token:{name}"),
            role,
            must_change_password: false,
            by_session: false,
        }))
}
