//! Thin query functions over `&PgPool` or a transaction. No business rules here:
//! callers decide; these read and write rows.

pub mod admin;
pub mod api_keys;
pub mod billing;
pub mod chats;
pub mod documents;
pub mod email_tokens;
pub mod members;
pub mod messages;
pub mod outbox;
pub mod refresh_tokens;
pub mod usage;
pub mod users;
pub mod workspaces;

/// A pool for `database.url`, connected lazily (`None` when no URL is set).
pub fn pool(config: &crate::config::Config) -> Option<Result<sqlx::PgPool, sqlx::Error>> {
    let url = config.database.url.as_ref()?;
    let options = match connect_options(url.expose()) {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(std::time::Duration::from_secs(
            config.database.acquire_timeout_secs,
        ))
        .connect_lazy_with(options)))
}

/// The URL's options. A server on this machine is reached without TLS unless
/// the URL (or `PGSSLMODE`) asks for it: sqlx's default `prefer` negotiates TLS
/// even on loopback, which encrypts every row on both sides for nothing.
fn connect_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let asked = url.contains("sslmode=") || std::env::var_os("PGSSLMODE").is_some();
    let host = options.get_host();
    let local = host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1");
    Ok(if local && !asked {
        options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
    } else {
        options
    })
}

/// Applies `migrations/`.
pub async fn migrate(db: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(db).await
}

/// True when `e` is a unique violation of the named constraint or index.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// True when retrying `e` can succeed: the connection or the server, not the
/// statement (lost or refused connections, pool timeouts, a server starting
/// or shutting down, serialization failures and deadlocks).
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            ["08", "40", "53", "57"]
                .iter()
                .any(|class| c.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgSslMode;

    use super::connect_options;

    #[test]
    fn loopback_goes_without_tls_unless_the_url_asks() {
        let mode = |url: &str| format!("{:?}", connect_options(url).unwrap().get_ssl_mode());
        let off = format!("{:?}", PgSslMode::Disable);
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), off);
        assert_eq!(mode("postgres://u@localhost/db"), off);
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            format!("{:?}", PgSslMode::Require)
        );
        assert_ne!(mode("postgres://u@db.example.com/db"), off);
    }
}
