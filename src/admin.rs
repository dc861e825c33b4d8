//! Administration: the actions an operator takes on accounts and workspaces,
//! each applied together with its `admin_audit` row in one transaction, so
//! no change happens unrecorded. Two doors call [`apply`]: the `switchboard
//! admin` command line ([`run_cli`]) and the admin-only REST routes
//! (`transport/http/admin.rs`). This module decides nothing about who is
//! allowed: the door has checked that (an admin token, or shell access to the
//! server with its database URL).

use std::fmt::Write as _;

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::admin::{self as q, NewAudit};

/// Who is acting: an admin user (REST) or an operator at the command line.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub label: String,
}

impl Actor {
    /// The operator running `switchboard admin`, named by the OS user.
    pub fn cli() -> Self {
        let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Self {
            user_id: None,
            label: format!("cli:{who}"),
        }
    }
}

/// One administrative change.
#[derive(Debug, Clone)]
pub enum Action {
    SetAdmin {
        user_id: Uuid,
        on: bool,
    },
    SetPlan {
        workspace_id: Uuid,
        plan: String,
    },
    /// Disabling also revokes the user's sessions and API keys.
    SetDisabled {
        user_id: Uuid,
        disabled: bool,
    },
    /// Signs the user out everywhere and revokes the API keys they created.
    RevokeSessions {
        user_id: Uuid,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such user")]
    NoSuchUser,
    #[error("no such workspace")]
    NoSuchWorkspace,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// What an action changed, for the caller to show.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub action: &'static str,
    pub sessions_revoked: u64,
    pub keys_revoked: u64,
}

/// The plans a workspace may be put on (the schema's check constraint).
pub const PLANS: [&str; 3] = ["free", "pro", "team"];

/// Applies the action and records it, atomically.
#[expect(
    clippy::too_many_lines,
    reason = "one match over the admin actions, each arm a short statement"
)]
pub async fn apply(db: &PgPool, actor: &Actor, action: Action) -> Result<Outcome, AdminError> {
    let mut tx = db.begin().await?;
    let mut out = Outcome {
        action: "",
        sessions_revoked: 0,
        keys_revoked: 0,
    };
    let (target_user, target_workspace, detail) = match &action {
        Action::SetAdmin { user_id, on } => {
            out.action = if *on { "grant_admin" } else { "revoke_admin" };
            if !q::set_admin(&mut tx, *user_id, *on).await? {
                return Err(AdminError::NoSuchUser);
            }
            (Some(*user_id), None, serde_json::json!({}))
        }
        Action::SetPlan { workspace_id, plan } => {
            out.action = "set_plan";
            if !PLANS.contains(&plan.as_str()) {
                return Err(AdminError::Invalid(format!(
                    "plan: must be one of {}",
                    PLANS.join(", ")
                )));
            }
            let old = q::set_plan(&mut tx, *workspace_id, plan)
                .await?
                .ok_or(AdminError::NoSuchWorkspace)?;
            (
                None,
                Some(*workspace_id),
                serde_json::json!({ "from": old, "to": plan }),
            )
        }
        Action::SetDisabled { user_id, disabled } => {
            out.action = if *disabled {
                "disable_user"
            } else {
                "enable_user"
            };
            if !q::set_disabled(&mut tx, *user_id, *disabled).await? {
                return Err(AdminError::NoSuchUser);
            }
            if *disabled {
                out.sessions_revoked = q::revoke_sessions(&mut tx, *user_id).await?;
                out.keys_revoked = q::revoke_keys(&mut tx, *user_id).await?;
                // Delivered at commit, to every node, from the CLI as from REST.
                q::notify_disabled(&mut tx, *user_id).await?;
            }
            (Some(*user_id), None, serde_json::json!({}))
        }
        Action::RevokeSessions { user_id } => {
            out.action = "revoke_sessions";
            if q::find_user(db, &user_id.to_string()).await?.is_none() {
                return Err(AdminError::NoSuchUser);
            }
            out.sessions_revoked = q::revoke_sessions(&mut tx, *user_id).await?;
            out.keys_revoked = q::revoke_keys(&mut tx, *user_id).await?;
            (Some(*user_id), None, serde_json::json!({}))
        }
    };
    let mut detail = detail;
    if out.sessions_revoked + out.keys_revoked > 0
        && let Some(d) = detail.as_object_mut()
    {
        d.insert("sessions_revoked".into(), out.sessions_revoked.into());
        d.insert("keys_revoked".into(), out.keys_revoked.into());
    }
    q::audit(
        &mut tx,
        NewAudit {
            actor_id: actor.user_id,
            actor: &actor.label,
            action: out.action,
            target_user,
            target_workspace,
            detail,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(actor = %actor.label, action = out.action, ?target_user, ?target_workspace, "admin action");
    Ok(out)
}

/// `switchboard admin …`: users are named by email or id.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Make a user an administrator.
    Grant { user: String },
    /// Take administrator rights away.
    Revoke { user: String },
    /// List users (oldest first).
    Users {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// List workspaces with their plan and member count.
    Workspaces {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// Put a workspace on a plan by hand (free, pro, team).
    SetPlan { workspace_id: Uuid, plan: String },
    /// Disable a user: no sign-in, no tokens; sessions and keys revoked.
    Disable { user: String },
    /// Enable a disabled user again (revoked keys stay revoked).
    Enable { user: String },
    /// Sign a user out everywhere and revoke the API keys they created.
    RevokeSessions { user: String },
    /// The latest audit log entries.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// Runs one admin command; the text to print, or the error to report.
pub async fn run_cli(db: &PgPool, cmd: AdminCommand) -> Result<String, AdminError> {
    let actor = Actor::cli();
    let user = |who: String| async move {
        q::find_user(db, &who)
            .await?
            .map(|u| u.id)
            .ok_or(AdminError::NoSuchUser)
    };
    let action = match cmd {
        AdminCommand::Users { limit, offset } => {
            let mut s = String::new();
            for u in q::list_users(db, limit.clamp(1, 10_000), offset.max(0)).await? {
                let _ = writeln!(
                    s,
                    "{}  {}  {}{}{}",
                    u.id,
                    u.email,
                    u.username,
                    if u.is_admin { "  admin" } else { "" },
                    if u.disabled_at.is_some() {
                        "  disabled"
                    } else {
                        ""
                    }
                );
            }
            return Ok(s);
        }
        AdminCommand::Workspaces { limit, offset } => {
            let mut s = String::new();
            for w in q::list_workspaces(db, limit.clamp(1, 10_000), offset.max(0)).await? {
                let _ = writeln!(s, "{}  {}  {}  members={}", w.id, w.plan, w.name, w.members);
            }
            return Ok(s);
        }
        AdminCommand::Audit { limit } => {
            let mut s = String::new();
            for a in q::audit_log(db, limit.clamp(1, 10_000)).await? {
                let target = a.target_user.or(a.target_workspace).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "{}  {}  {}  {}  {}",
                    a.created_at.to_rfc3339(),
                    a.actor,
                    a.action,
                    target,
                    a.detail
                );
            }
            return Ok(s);
        }
        AdminCommand::Grant { user: u } => Action::SetAdmin {
            user_id: user(u).await?,
            on: true,
        },
        AdminCommand::Revoke { user: u } => Action::SetAdmin {
            user_id: user(u).await?,
            on: false,
        },
        AdminCommand::SetPlan { workspace_id, plan } => Action::SetPlan { workspace_id, plan },
        AdminCommand::Disable { user: u } => Action::SetDisabled {
            user_id: user(u).await?,
            disabled: true,
        },
        AdminCommand::Enable { user: u } => Action::SetDisabled {
            user_id: user(u).await?,
            disabled: false,
        },
        AdminCommand::RevokeSessions { user: u } => Action::RevokeSessions {
            user_id: user(u).await?,
        },
    };
    let out = apply(db, &actor, action).await?;
    Ok(format!(
        "{}: done (sessions revoked: {}, keys revoked: {})\n",
        out.action, out.sessions_revoked, out.keys_revoked
    ))
}
