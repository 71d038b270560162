//! The admin users under `/api/v1/users` (owners only, by `extract::ROUTE_ROLES`): list, invite or
//! create, change role, disable or enable, reset a password, remove; list a user's sessions and end
//! them. Every change is audited with who made it and from where.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::admin::parse_role;
use super::error::ApiError;
use super::extract::{Actor, ApiJson, ApiPath};
use crate::admins;
use crate::model::Username;
use crate::store::admin::{AdminUser, UserChanges};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserJson {
    username: String,
    role: &'static str,
    disabled: bool,
    disabled_at: Option<String>,
    must_change_password: bool,
    created_at: String,
    password_changed_at: String,
    sessions: i64,
}

impl From<AdminUser> for UserJson {
    fn from(u: AdminUser) -> UserJson {
        UserJson {
            username: u.username,
            role: u.role.as_str(),
            disabled: u.disabled_at.is_some(),
            disabled_at: u.disabled_at.map(|t| t.to_rfc3339()),
            must_change_password: u.must_change_password,
            created_at: u.created_at.to_rfc3339(),
            password_changed_at: u.password_changed_at.to_rfc3339(),
            sessions: u.sessions,
        }
    }
}

#[derive(Serialize)]
pub struct UsersJson {
    items: Vec<UserJson>,
}

/// `GET /api/v1/users`.
pub async fn list(State(state): State<AppState>) -> Result<Json<UsersJson>, ApiError> {
    let users = admins::list_users(&state.store).await?;
    Ok(Json(UsersJson {
        items: users.into_iter().map(UserJson::from).collect(),
    }))
}

async fn one(state: &AppState, username: &str) -> Result<UserJson, ApiError> {
    admins::list_users(&state.store)
        .await?
        .into_iter()
        .find(|u| u.username == username)
        .map(UserJson::from)
        .ok_or_else(|| ApiError::not_found("admin user"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    username: String,
    role: String,
    /// Without one, a one-time password is made and returned once.
    password: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUserJson {
    #[serde(flatten)]
    user: UserJson,
    /// Shown this once; the user must change it at their first login.
    #[serde(skip_serializing_if = "Option::is_none")]
    one_time_password: Option<String>,
}

/// `POST /api/v1/users` `{"username", "role", "password"?}` → 201, with `oneTimePassword` when none
/// was given.
pub async fn create(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<(StatusCode, Json<CreatedUserJson>), ApiError> {
    let username = Username::parse(&body.username).map_err(|e| ApiError::invalid("username", e))?;
    let role = parse_role(&body.role)?;
    let name = username.as_str().to_string();
    let one_time_password =
        admins::create_user(&state.store, &actor, username, role, body.password).await?;
    let user = one(&state, &name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUserJson {
            user,
            one_time_password,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    role: Option<String>,
    disabled: Option<bool>,
}

/// `PATCH /api/v1/users/{username}` `{"role"?, "disabled"?}`: 409 when it would leave no enabled
/// owner.
pub async fn patch(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(username): ApiPath<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<UserJson>, ApiError> {
    let changes = UserChanges {
        role: body.role.as_deref().map(parse_role).transpose()?,
        disabled: body.disabled,
    };
    admins::change_user(&state.store, &actor, &username, changes).await?;
    Ok(Json(one(&state, &username).await?))
}

/// `DELETE /api/v1/users/{username}`: 409 for the last enabled owner.
pub async fn delete(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    admins::delete_user(&state.store, &actor, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// Without one, a one-time password is made and returned once.
    password: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    one_time_password: Option<String>,
}

/// `POST /api/v1/users/{username}/password` `{"password"?}`: a new password (a one-time one, returned
/// once, when none is given); the user's sessions end.
pub async fn reset_password(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(username): ApiPath<String>,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<Json<PasswordJson>, ApiError> {
    let one_time_password = admins::set_password(
        &state.store,
        &state.config.storage.data_dir,
        &actor,
        &username,
        body.password,
    )
    .await?;
    Ok(Json(PasswordJson { one_time_password }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionJson {
    id: String,
    created_at: String,
    expires_at: String,
    from: Option<String>,
    user_agent: Option<String>,
}

#[derive(Serialize)]
pub struct SessionsJson {
    items: Vec<SessionJson>,
}

/// `GET /api/v1/users/{username}/sessions`: the live ones, oldest first.
pub async fn sessions(
    State(state): State<AppState>,
    ApiPath(username): ApiPath<String>,
) -> Result<Json<SessionsJson>, ApiError> {
    let sessions = admins::sessions(&state.store, &username).await?;
    Ok(Json(SessionsJson {
        items: sessions
            .into_iter()
            .map(|s| SessionJson {
                id: s.id,
                created_at: s.created_at.to_rfc3339(),
                expires_at: s.expires_at.to_rfc3339(),
                from: s.from,
                user_agent: s.user_agent,
            })
            .collect(),
    }))
}

#[derive(Serialize)]
pub struct EndedJson {
    ended: usize,
}

/// `DELETE /api/v1/users/{username}/sessions`: ends every session of the user.
pub async fn end_sessions(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(username): ApiPath<String>,
) -> Result<Json<EndedJson>, ApiError> {
    let ended = admins::end_sessions(&state.store, &actor, &username, None).await?;
    Ok(Json(EndedJson { ended }))
}

/// `DELETE /api/v1/users/{username}/sessions/{id}`: ends one session.
pub async fn end_session(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath((username, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admins::end_sessions(&state.store, &actor, &username, Some(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
