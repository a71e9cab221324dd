//! Test support shared by the store test files: a fresh PostgreSQL database per test.
//!
//! The server comes from `PIPELET_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, any database the user may connect to).
//! Each test creates `pipelet_test_<uuid>` there, so tests run in parallel, and drops it
//! when it passes (a failed test leaves its database for inspection). An unreachable
//! server fails the test unless `PIPELET_SKIP_POSTGRES=1`.

#![allow(dead_code)]

use std::time::Duration;

use sqlx::{Connection, PgConnection};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct PgTestDb {
    /// URL of the fresh database.
    pub url: String,
    name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("PIPELET_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string())
}

pub fn skip_postgres() -> bool {
    std::env::var("PIPELET_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// `url` with its database replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_at = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_at..].find('/') {
        Some(slash) => &base[..authority_at + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

async fn admin_connection(url: &str) -> PgConnection {
    let connected = tokio::time::timeout(Duration::from_secs(15), PgConnection::connect(url)).await;
    match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "PostgreSQL unreachable at {url}: {e}. Start it, point PIPELET_TEST_DATABASE_URL \
             at one, or set PIPELET_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        ),
        Err(_) => panic!(
            "PostgreSQL at {url} did not answer in 15 s. Set PIPELET_SKIP_POSTGRES=1 to skip \
             the PostgreSQL tests"
        ),
    }
}

/// A fresh, empty database, or `None` when PostgreSQL tests are switched off.
pub async fn pg_test_db() -> Option<PgTestDb> {
    if skip_postgres() {
        eprintln!("PIPELET_SKIP_POSTGRES=1: skipping a PostgreSQL test");
        return None;
    }
    let admin_url = admin_url();
    let mut admin = admin_connection(&admin_url).await;
    let name = format!("pipelet_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = admin.close().await;
    Some(PgTestDb {
        url: with_database(&admin_url, &name),
        name,
        admin_url,
    })
}

impl PgTestDb {
    /// Drops the database, ending any session still on it (best effort).
    pub async fn drop_db(self) {
        let Ok(Ok(mut admin)) = tokio::time::timeout(
            Duration::from_secs(15),
            PgConnection::connect(&self.admin_url),
        )
        .await
        else {
            return;
        };
        let dropped = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await;
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
        let _ = admin.close().await;
    }
}

#[test]
fn database_is_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    assert_eq!(
        with_database("postgres://u@h/db?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}
