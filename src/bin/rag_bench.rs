//! `rag_bench`: vector search latency and recall on pgvector at scale
//! (docs/BENCHMARKS.md, "Document search"). Creates its own database on the
//! given server, fills one workspace with `--chunks` chunks among others
//! holding `--others`, then times searches (the same SQL as
//! `POST /api/documents/search`, without the HTTP hop and the query
//! embedding) at concurrency 1 and 16 and measures recall@10 against exact
//! search. Vectors are clustered (as real embeddings are): 1,000 random
//! centres plus noise, unit length.
//!
//! `cargo run --release --bin rag_bench -- --server postgres://postgres@127.0.0.1:5432`

use std::time::{Duration, Instant};

use clap::Parser;
use pgvector::Vector;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use switchboard::store::documents::{self as docs, NewChunk, SearchParams};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// A PostgreSQL server with pgvector; a database `rag_bench_*` is created and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    server: String,
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Chunks in other workspaces (two of them).
    #[arg(long, default_value_t = 50_000)]
    others: usize,
    #[arg(long, default_value_t = 200)]
    ef_search: u32,
    /// Searches per concurrency level.
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 20_001) as f32 / 10_000.0 - 1.0
    }
    fn vector(&mut self, centre: &[f32], noise: f32) -> Vec<f32> {
        let mut v: Vec<f32> = centre.iter().map(|c| c + noise * self.next()).collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let name = format!("rag_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", args.server)).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
        .await?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&format!("{}/{name}", args.server))
        .await?;
    let result = run(&db, &args).await;
    db.close().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"drop database "{name}""#)))
        .await?;
    result
}

async fn run(db: &PgPool, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    switchboard::store::migrate(db).await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let zero = vec![0f32; 384];
    let centres: Vec<Vec<f32>> = (0..1_000).map(|_| rng.vector(&zero, 1.0)).collect();
    let started = Instant::now();
    let target = fill(db, &mut rng, &centres, args.chunks).await?;
    for _ in 0..2 {
        fill(db, &mut rng, &centres, args.others / 2).await?;
    }
    println!(
        "loaded {} + {} chunks in {:.0} s",
        args.chunks,
        args.others,
        started.elapsed().as_secs_f64()
    );
    let queries: Vec<Vec<f32>> = (0..args.queries)
        .map(|i| rng.vector(&centres[i % centres.len()], 0.05))
        .collect();
    let params = SearchParams {
        limit: 10,
        ef_search: args.ef_search,
        exact: false,
    };
    for concurrency in [1usize, 16] {
        let mut lat = latencies(db, target, &queries, params, concurrency).await?;
        lat.sort();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "concurrency {concurrency}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms over {} searches",
            pct(0.50),
            pct(0.95),
            pct(0.99),
            lat.len()
        );
    }
    let (mut found, mut wanted) = (0, 0);
    for q in queries.iter().take(100) {
        let approx = docs::search(db, target, None, Vector::from(q.clone()), params).await?;
        let exact = docs::search(
            db,
            target,
            None,
            Vector::from(q.clone()),
            SearchParams {
                exact: true,
                ..params
            },
        )
        .await?;
        wanted += exact.len();
        found += exact
            .iter()
            .filter(|e| approx.iter().any(|a| a.chunk == e.chunk))
            .count();
    }
    println!(
        "recall@10 vs exact (100 queries, ef_search {}): {:.3}",
        args.ef_search,
        found as f64 / wanted as f64
    );
    Ok(())
}

/// A workspace with one document of `n` chunks; answers the workspace id.
async fn fill(
    db: &PgPool,
    rng: &mut Rng,
    centres: &[Vec<f32>],
    n: usize,
) -> Result<Uuid, sqlx::Error> {
    let ws = Uuid::now_v7();
    let user = Uuid::now_v7();
    sqlx::query("insert into workspaces (id, name) values ($1, 'bench')")
        .bind(ws)
        .execute(db)
        .await?;
    sqlx::query("insert into users (id, email, username, password_hash) values ($1, $2, $3, 'x')")
        .bind(user)
        .bind(format!("{user}@bench.local"))
        .bind(format!("b{}", &user.simple().to_string()[..20]))
        .execute(db)
        .await?;
    let doc = docs::insert(
        db,
        &docs::NewDocument {
            workspace_id: ws,
            uploaded_by: user,
            title: "bench",
            filename: "bench.txt",
            content_type: "text/plain",
            size_bytes: 0,
            body: "",
        },
    )
    .await?;
    for start in (0..n).step_by(500) {
        let rows = (start..(start + 500).min(n))
            .map(|i| NewChunk {
                ordinal: i32::try_from(i).unwrap_or(i32::MAX),
                content: String::new(),
                start: 0,
                end: 0,
                heading: None,
                tokens: 0,
                embedding: Vector::from(rng.vector(&centres[(i * 7) % centres.len()], 0.3)),
            })
            .collect();
        docs::insert_chunks(db, ws, doc.id, rows).await?;
    }
    Ok(ws)
}

async fn latencies(
    db: &PgPool,
    ws: Uuid,
    queries: &[Vec<f32>],
    params: SearchParams,
    concurrency: usize,
) -> Result<Vec<Duration>, sqlx::Error> {
    let per = queries.len().div_ceil(concurrency);
    let workers = queries.chunks(per).map(|part| async move {
        let mut out = Vec::with_capacity(part.len());
        for q in part {
            let t = Instant::now();
            docs::search(db, ws, None, Vector::from(q.clone()), params).await?;
            out.push(t.elapsed());
        }
        Ok::<_, sqlx::Error>(out)
    });
    let mut all = Vec::new();
    // One task, many futures: the searches wait on Postgres, not on this CPU.
    for part in futures::future::join_all(workers).await {
        all.extend(part?);
    }
    Ok(all)
}
