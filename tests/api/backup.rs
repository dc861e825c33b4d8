//! scripts/backup.sh and scripts/restore.sh against a real database: back up
//! a server's data, destroy it, restore it, and find every chat, message, key
//! and usage row as it was; retention and a bad date are checked too.

use std::{path::Path, process::Command, time::Duration};

use serde_json::json;

use crate::helpers::{TestApp, eventually, spawn_app};

/// A fingerprint of every row that matters: counts and an md5 over the rows' text.
async fn fingerprint(app: &TestApp) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for table in [
        "users",
        "workspaces",
        "chats",
        "messages",
        "api_keys",
        "usage_events",
    ] {
        // Table names come from the fixed list above, never from input.
        let sql = format!(
            "select count(*), coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from {table} t"
        );
        let (n, md5): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&app.db)
            .await
            .unwrap();
        out.push((table.to_owned(), n, md5));
    }
    out
}

/// A directory removed when the test ends, pass or fail.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn script(name: &str, dir: &Path, url: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name),
    )
    .env("BACKUP_DIR", dir)
    .env("DATABASE_URL", url)
    .env_remove("BACKUP_S3_URI");
    cmd
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn backup_destroy_restore_keeps_every_row() {
    let app = spawn_app().await;
    let url = app
        .config
        .database
        .url
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    // Real data through the real server: users, chats, answered messages, usage, keys.
    for _ in 0..2 {
        let user = app.new_user().await;
        let res = app
            .client
            .post(app.url("/api/keys"))
            .bearer_auth(&user.access_token)
            .json(&json!({ "name": "backup test" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let mut ws = app.ws(&user.access_token).await;
        for i in 0..2 {
            let chat = app.create_chat(&user.access_token).await;
            ws.send_message(chat, &format!("b{i}"), "hello there").await;
            ws.next_of("done").await;
        }
    }
    eventually(Duration::from_secs(10), "usage rows written", || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from usage_events")
            .fetch_one(&app.db)
            .await
            .unwrap();
        (n == 4).then_some(())
    })
    .await;
    let before = fingerprint(&app).await;
    assert!(before.iter().all(|(_, n, _)| *n > 0), "{before:?}");

    let dir = TempDir(std::env::temp_dir().join(format!("sb-backup-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(dir.path()).unwrap();
    // An old dump past retention, and one inside it.
    let old = dir.path().join("switchboard-2020-01-01T000000Z.dump");
    let recent = dir.path().join("switchboard-2020-01-02T000000Z.dump");
    for (f, age) in [(&old, "30 days ago"), (&recent, "2 days ago")] {
        std::fs::write(f, b"not a dump").unwrap();
        ok(Command::new("touch")
            .args(["-d", age])
            .arg(f)
            .output()
            .unwrap());
    }
    let written = ok(script("backup.sh", dir.path(), &url)
        .env("BACKUP_RETENTION_DAYS", "14")
        .output()
        .unwrap());
    assert!(written.trim().ends_with(".dump"), "{written}");
    assert!(!old.exists(), "the dump past retention is deleted");
    assert!(recent.exists(), "the dump inside retention is kept");

    // Destroy: the tables and everything in them.
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "drop table usage_events, messages, chats, api_keys cascade; delete from users;",
    ))
    .execute(&app.db)
    .await
    .unwrap();

    let listing = ok(script("restore.sh", dir.path(), &url)
        .arg("-l")
        .output()
        .unwrap());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(listing.lines().any(|l| l.starts_with(&today)), "{listing}");

    // A date with no backup, and a malformed one, are refused without touching anything.
    for bad in ["1999-01-01", "yesterday; rm -rf /"] {
        let out = script("restore.sh", dir.path(), &url)
            .args(["-d", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
    }
    ok(script("restore.sh", dir.path(), &url)
        .args(["-d", &today, "-y"])
        .output()
        .unwrap());
    assert_eq!(fingerprint(&app).await, before);

    // A corrupted dump is refused by its checksum.
    let dump = Path::new(written.trim());
    let mut bytes = std::fs::read(dump).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(dump, bytes).unwrap();
    let out = script("restore.sh", dir.path(), &url)
        .args(["-d", &today, "-y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
    assert_eq!(fingerprint(&app).await, before);
}
