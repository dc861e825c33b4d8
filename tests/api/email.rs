//! The email pipeline against the real RabbitMQ and a local SMTP sink: outbox
//! → relay → queue → worker → SMTP. Every test has a queue name of its own
//! (`x-expires` cleans it up), so parallel tests never take each other's mail.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::{Value, json};
use switchboard::config::{Config, Secret, SmtpTls};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::{
    helpers::{PASSWORD, TestApp, eventually, spawn_app_with},
    smtp_sink::SmtpSink,
};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Relay and worker on, a queue of this test's own, SMTP to `sink`, fast retries.
pub fn email_config(c: &mut Config, sink: &SmtpSink) {
    c.email.relay = true;
    c.email.worker_in_serve = true;
    c.email.queue = format!("sbtest.email.{}", Uuid::new_v4().simple());
    c.email.queue_expires_ms = Some(300_000);
    c.email.relay_interval_ms = 50;
    c.email.retry_base_ms = 100;
    c.email.retry_max_ms = 400;
    c.email.max_attempts = 6;
    c.smtp.host = Some("127.0.0.1".into());
    c.smtp.port = Some(sink.port);
    c.smtp.tls = SmtpTls::None;
    c.smtp.timeout_secs = 5;
}

pub async fn email_app(sink: &SmtpSink, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        email_config(c, sink);
        tweak(c);
    })
    .await
}

/// Signs up `email` and returns the verification token from the mail it gets.
pub async fn signup_and_get_token(app: &TestApp, sink: &SmtpSink, email: &str) -> String {
    let username = format!("u{}", &Uuid::new_v4().simple().to_string()[..12]);
    let res = app.signup(email, &username, PASSWORD).await;
    assert_eq!(res.status(), 201);
    sink.wait_for(email, "Verify your email")
        .await
        .token_for("verify-email")
        .expect("a verification link")
}

/// A TCP proxy to the real RabbitMQ that a test can cut (existing connections
/// dropped, new ones refused) and restore.
struct AmqpProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl AmqpProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn unpublished(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from email_outbox where published_at is null")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn assert_each_once(mails: &[crate::smtp_sink::Mail]) {
    let mut ids: Vec<String> = mails.iter().map(|m| m.message_id()).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a message was sent twice: {ids:?}");
}

#[tokio::test]
async fn rabbitmq_outage_loses_nothing_and_sends_nothing_twice() {
    let sink = SmtpSink::start().await;
    let proxy = AmqpProxy::start().await;
    let url = proxy.url();
    let app = email_app(&sink, |c| c.amqp.url = Some(Secret::new(url))).await;
    let first = format!("first-{}@example.com", Uuid::new_v4().simple());
    signup_and_get_token(&app, &sink, &first).await;

    // RabbitMQ goes away: sign-ups still succeed, their emails wait in the outbox.
    proxy.stop();
    let mut emails = Vec::new();
    for i in 0..5 {
        let email = format!("down{i}-{}@example.com", Uuid::new_v4().simple());
        let res = app
            .signup(
                &email,
                &format!("down{i}{}", &Uuid::new_v4().simple().to_string()[..8]),
                PASSWORD,
            )
            .await;
        assert_eq!(res.status(), 201);
        emails.push(email);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        unpublished(&app).await,
        5,
        "held in the outbox while RabbitMQ is down"
    );
    assert_eq!(sink.mails().len(), 1);
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["email"]["relay"], "down");

    // It comes back: every email goes out, once.
    proxy.restore();
    let mails = sink.wait_for_count(6).await;
    for email in &emails {
        assert_eq!(sink.mails_to(email).len(), 1, "{email}");
    }
    assert_each_once(&mails);
    assert_eq!(unpublished(&app).await, 0);
    // Links are dropped from the stored payload once published.
    let links: i64 = sqlx::query_scalar("select count(*) from email_outbox where payload ? 'link'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(links, 0);
}

#[tokio::test]
async fn smtp_refusing_for_a_while_loses_nothing() {
    let sink = SmtpSink::start().await;
    sink.refuse_next(4);
    let app = email_app(&sink, |_| {}).await;
    let mut emails = Vec::new();
    for i in 0..3 {
        let email = format!("refused{i}-{}@example.com", Uuid::new_v4().simple());
        signup_and_get_token(&app, &sink, &email).await;
        emails.push(email);
    }
    let mails = sink.wait_for_count(3).await;
    assert_each_once(&mails);
    assert_eq!(sink.refused(), 4, "the first attempts were refused");
    let m = metrics(&app).await;
    assert!(m.contains("switchboard_email_retried_total"), "{m}");
    assert!(m.contains("switchboard_email_sent_total"), "{m}");
    // The delivery row is written after the SMTP server accepted the mail.
    eventually(
        Duration::from_secs(10),
        "3 deliveries recorded as sent",
        || async {
            let sent: i64 =
                sqlx::query_scalar("select count(*) from email_deliveries where status = 'sent'")
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
            assert!(sent <= 3, "{sent} deliveries for 3 mails");
            (sent == 3).then_some(())
        },
    )
    .await;
}

/// Publishes a job straight onto the test's work queue, as a redelivery would.
async fn publish_raw(queue: &str, body: &[u8]) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
}

async fn queue_len(queue: &str) -> u32 {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

#[tokio::test]
async fn a_redelivered_message_is_sent_once() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let email = format!("dup-{}@example.com", Uuid::new_v4().simple());
    signup_and_get_token(&app, &sink, &email).await;
    let (id, payload): (Uuid, Value) =
        sqlx::query_as("select id, payload from email_outbox where to_address = $1")
            .bind(&email)
            .fetch_one(&app.db)
            .await
            .unwrap();
    // The same outbox id again, twice (a relay that crashed before its commit).
    let mut payload = payload;
    payload["link"] = json!("http://127.0.0.1:8080/verify-email?token=00");
    let job = json!({"id": id, "to": email, "template": "verify_email", "payload": payload});
    for _ in 0..2 {
        publish_raw(&app.config.email.queue, job.to_string().as_bytes()).await;
    }
    for _ in 0..100 {
        if metrics(&app)
            .await
            .contains("switchboard_email_duplicates_total")
            && queue_len(&app.config.email.queue).await == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.mails_to(&email).len(), 1, "sent once");
    assert!(
        metrics(&app)
            .await
            .contains("switchboard_email_duplicates_total")
    );
}

#[tokio::test]
async fn what_cannot_be_sent_goes_to_the_dead_letter_queue() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| c.email.max_attempts = 2).await;
    let queue = app.config.email.queue.clone();
    // An unknown template, a recipient SMTP cannot take, and bytes that are not a job.
    for (template, to) in [
        ("no_such_template", "a@example.com"),
        ("budget_alert", "not an address"),
    ] {
        let mut tx = app.db.begin().await.unwrap();
        switchboard::store::outbox::enqueue(&mut tx, to, template, &json!({}))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    publish_raw(&queue, b"{not json").await;
    // And one the SMTP server keeps refusing: two attempts, then dead.
    sink.refuse_next(100);
    let mut tx = app.db.begin().await.unwrap();
    switchboard::store::outbox::enqueue(
        &mut tx,
        "b@example.com",
        "budget_alert",
        &json!({"threshold_pct": 50}),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let dead = format!("{queue}.dead");
    for _ in 0..200 {
        if queue_len(&dead).await >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queue_len(&dead).await, 4);
    assert_eq!(sink.refused(), 2, "retried once, then given up");
    assert!(sink.mails().is_empty());
    let m = metrics(&app).await;
    assert!(m.contains("switchboard_email_failed_total"), "{m}");
}

#[tokio::test]
async fn budget_alerts_arrive_as_email() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |c| {
        c.accounts.unverified_may_spend = true;
        let free = c.plans.get_mut("free").unwrap();
        free.daily_budget_micros = 40;
        c.chat.max_output_tokens = 20;
        c.simulated.reply_tokens = 20;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    for i in 0..8 {
        let res = app
            .client
            .post(app.url(&format!("/api/chats/{chat}/messages")))
            .bearer_auth(&user.access_token)
            .json(&json!({ "content": format!("spend {i}") }))
            .send()
            .await
            .unwrap();
        if res.status() == 402 {
            break;
        }
        assert_eq!(res.status(), 200);
    }
    let mail = sink.wait_for(&user.email, "Budget alert: 50%").await;
    assert!(mail.text().contains("daily budget"), "{}", mail.text());
    assert!(
        mail.text().contains("daily budget is spent"),
        "{}",
        mail.text()
    );
}

#[tokio::test]
async fn readiness_and_metrics_report_email() {
    let sink = SmtpSink::start().await;
    let app = email_app(&sink, |_| {}).await;
    let email = format!("ready-{}@example.com", Uuid::new_v4().simple());
    signup_and_get_token(&app, &sink, &email).await;
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["email"]["relay"], "up");
    assert_eq!(ready["checks"]["email"]["worker"], "up");
    assert_eq!(ready["checks"]["email"]["smtp"], "ok");
    let m = metrics(&app).await;
    for name in [
        "switchboard_email_published_total",
        "switchboard_email_sent_total",
        "switchboard_email_rabbitmq_connected",
    ] {
        assert!(m.contains(name), "{name} in {m}");
    }
}

#[tokio::test]
async fn two_nodes_relay_and_send_a_burst_each_once() {
    let sink = SmtpSink::start().await;
    let first = email_app(&sink, |_| {}).await;
    // A second node on the same database and queue: both relay, both send.
    let (db_url, queue) = (
        first.config.database.url.clone(),
        first.config.email.queue.clone(),
    );
    let second = email_app(&sink, |c| {
        c.database.url = db_url;
        c.email.queue = queue;
    })
    .await;
    let started = std::time::Instant::now();
    const N: usize = 300;
    let mut tx = first.db.begin().await.unwrap();
    for i in 0..N {
        let payload = json!({"threshold_pct": 50, "scope": "user", "period": "daily",
                             "spent_micros": i, "limit_micros": 1_000});
        switchboard::store::outbox::enqueue(
            &mut tx,
            &format!("burst{i}@example.com"),
            "budget_alert",
            &payload,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mails = sink.wait_for_count(N).await;
    let elapsed = started.elapsed();
    assert_each_once(&mails);
    // Each row was published by exactly one relay, once.
    let attempts: Vec<i32> = sqlx::query_scalar("select attempts from email_outbox")
        .fetch_all(&first.db)
        .await
        .unwrap();
    assert_eq!(attempts.len(), N);
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
    // A worker records the delivery just after the SMTP server took the mail.
    eventually(
        Duration::from_secs(10),
        "every delivery recorded as sent",
        || async {
            let sent: i64 =
                sqlx::query_scalar("select count(*) from email_deliveries where status = 'sent'")
                    .fetch_one(&second.db)
                    .await
                    .unwrap();
            (sent == N as i64).then_some(())
        },
    )
    .await;
    eprintln!("{N} emails through two relays and two workers in {elapsed:?}");
}

#[tokio::test]
async fn the_send_lease_admits_one_sender_and_lapses() {
    use switchboard::store::outbox::{self, Claim};
    let app = crate::helpers::spawn_app().await;
    let id = Uuid::now_v7();
    assert_eq!(outbox::claim(&app.db, id, 60).await.unwrap(), Claim::Mine);
    assert_eq!(
        outbox::claim(&app.db, id, 60).await.unwrap(),
        Claim::Busy,
        "held by the first"
    );
    // A lease older than its length (its worker died) is taken over.
    sqlx::query("update email_deliveries set claimed_at = now() - interval '2 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(outbox::claim(&app.db, id, 60).await.unwrap(), Claim::Mine);
    // Released after a failure: the retry takes it at once.
    outbox::release(&app.db, id).await.unwrap();
    assert_eq!(outbox::claim(&app.db, id, 60).await.unwrap(), Claim::Mine);
    outbox::mark_sent(&app.db, id).await.unwrap();
    assert_eq!(
        outbox::claim(&app.db, id, 60).await.unwrap(),
        Claim::AlreadySent
    );
    sqlx::query("update email_deliveries set claimed_at = now() - interval '1 day'")
        .execute(&app.db)
        .await
        .unwrap();
    outbox::release(&app.db, id).await.unwrap();
    assert_eq!(
        outbox::claim(&app.db, id, 60).await.unwrap(),
        Claim::AlreadySent,
        "sent stays sent"
    );
}

/// lapin keeps 32 frames of buffer each way per connection, so ours ask for
/// 16 KiB frames unless the URL sets `frame_max`; a job larger than a frame
/// still arrives whole, and a URL that does not parse never echoes its password.
#[tokio::test]
async fn connections_use_small_frames_and_large_jobs_still_arrive() {
    use lapin::options::BasicGetOptions;
    use switchboard::email::queue::{self, EmailJob, QueueError};

    let (conn, ch) = queue::connect(AMQP).await.unwrap();
    assert_eq!(conn.configuration().frame_max(), 16 * 1024);
    let name = format!("sb-test-frames-{}", Uuid::new_v4());
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), lapin::types::AMQPValue::LongInt(60_000));
    ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    let job = EmailJob {
        id: Uuid::new_v4(),
        to: "frames@example.com".into(),
        template: "verify".into(),
        payload: json!({ "text": "x".repeat(100_000) }),
        attempt: 0,
        last_error: None,
    };
    queue::publish(&ch, &name, &job).await.unwrap();
    let got = ch
        .basic_get(name.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the job is on the queue");
    let back: EmailJob = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(back, job);
    let _ = conn.close(200, "done".into()).await;

    let conn = queue::open(&format!("{AMQP}?frame_max=65536"))
        .await
        .unwrap();
    assert_eq!(conn.configuration().frame_max(), 65536);
    let _ = conn.close(200, "done".into()).await;

    let err = queue::open("amqp://guest:hunter2@[::1/%2f")
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::BadUrl), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}
