//! `pipelet keys …`: key management straight on the store (the data dir's SQLite file or
//! `--database-url`), so it works with or without a running server. A running server
//! sees a revoke, rotate or update within a second (it polls the store's key generation).
//! Secrets are printed only by `create` and `rotate`, alone on stdout.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use pipelet_server::app::database_path;
use pipelet_store::api_keys::{check_key_name, expiry_after};
use pipelet_store::postgres::PgStore;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{KeyRecord, KeyUpdate, NewKey, Role, Store, StoreError, now_ms};
use serde_json::json;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (only the key) on stdout.
    Create {
        /// A name to recognise the key by (shown in logs and cancel records); no live
        /// key may have it already.
        #[arg(long)]
        name: String,
        /// client: the queue API for its own requests; worker: only the worker API;
        /// admin: the queue API for every key's requests, and key management.
        #[arg(long, value_enum, default_value = "client")]
        role: RoleArg,
        /// Most `priority` the key's requests may add to their tier's priority.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        max_priority: i64,
        /// The key stops working after this long, e.g. 30d, 12h (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Most requests the key may have queued at once (0: no limit; default: the
        /// server's --max-queued-per-key).
        #[arg(long)]
        max_queued: Option<u64>,
        /// Most of the key's requests that may run at once (0: no limit; default: the
        /// server's --max-running-per-key).
        #[arg(long)]
        max_running: Option<u64>,
        /// Most creates the key may make a minute, per server (0: no limit; default:
        /// the server's --creates-per-minute).
        #[arg(long)]
        creates_per_minute: Option<u64>,
        /// The key's share of the queue against other keys' requests of the same
        /// priority, 1 to 100: weight 2 gets twice the dispatches of weight 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=100))]
        weight: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the keys (revoked ones too): name, role, the first characters of the
    /// secret, priority cap, created, expires, last used, revoked, quotas, weight. Never a
    /// secret.
    List {
        /// Print JSON (an array of keys) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke the live key NAME: it stops working on every server within a second.
    Revoke {
        /// The key's name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give the live key NAME a new secret (same id, name and role) and print it (only
    /// it) on stdout; the old secret stops working at once.
    Rotate {
        /// The key's name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Change the priority cap, expiry, quotas or weight of the live key NAME.
    Update {
        /// The key's name.
        name: String,
        /// A new priority cap.
        #[arg(long, allow_negative_numbers = true)]
        max_priority: Option<i64>,
        /// A new expiry, from now, e.g. 30d.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "no_expiry")]
        expires_in: Option<Duration>,
        /// Remove the expiry: the key works until revoked.
        #[arg(long)]
        no_expiry: bool,
        /// A new queued-requests quota: N (0: no limit), or `default` for the server's
        /// --max-queued-per-key.
        #[arg(long, value_parser = parse_quota)]
        max_queued: Option<Quota>,
        /// A new running-requests quota: N (0: no limit), or `default` for the
        /// server's --max-running-per-key.
        #[arg(long, value_parser = parse_quota)]
        max_running: Option<Quota>,
        /// A new creates-per-minute rate: N (0: no limit), or `default` for the
        /// server's --creates-per-minute.
        #[arg(long, value_parser = parse_quota)]
        creates_per_minute: Option<Quota>,
        /// A new share of the queue against other keys' requests of the same
        /// priority, 1 to 100.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=100))]
        weight: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the keys are: the server's store.
#[derive(Args)]
pub struct StoreArgs {
    /// The server's data directory (its embedded database).
    #[arg(long, env = "PIPELET_DATA_DIR", default_value = "./pipelet-data")]
    data_dir: PathBuf,
    /// The server's PostgreSQL database, when it uses one.
    #[arg(long, env = "PIPELET_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl StoreArgs {
    async fn open(self) -> anyhow::Result<Box<dyn Store>> {
        Ok(match self.database_url {
            Some(url) => Box::new(PgStore::connect(&url).await?),
            None => {
                std::fs::create_dir_all(&self.data_dir)?;
                Box::new(SqliteStore::open(&database_path(&self.data_dir)).await?)
            }
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Client,
    Worker,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Client => Role::Client,
            RoleArg::Worker => Role::Worker,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// A key's quota as `keys update` takes it: its own limit, or `None` for the server's
/// default.
#[derive(Debug, Clone, Copy)]
pub struct Quota(Option<u64>);

/// `N` or `default`.
fn parse_quota(s: &str) -> Result<Quota, String> {
    if s.eq_ignore_ascii_case("default") {
        return Ok(Quota(None));
    }
    s.parse()
        .map(|n| Quota(Some(n)))
        .map_err(|_| format!("expected a number (0: no limit) or `default`, got {s:?}"))
}

/// A key's quota for people: its own limit, `none` for 0, or `default`.
fn quota_text(limit: Option<u64>) -> String {
    match limit {
        None => "default".into(),
        Some(0) => "none".into(),
        Some(n) => n.to_string(),
    }
}

/// An expiry `after` from now, ms since the epoch (at least a second).
fn expiry(after: Duration) -> anyhow::Result<i64> {
    if after < Duration::from_secs(1) {
        anyhow::bail!("--expires-in must be at least 1s");
    }
    Ok(expiry_after(now_ms(), after.as_secs()))
}

/// Store errors in the words of the CLI.
fn explain(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::KeyNotFound(name) => {
            anyhow::anyhow!("no live key is named '{name}' (see `pipelet keys list`)")
        }
        StoreError::KeyNameTaken(name) => anyhow::anyhow!(
            "a live key is already named '{name}'; revoke it first or choose another --name"
        ),
        e => e.into(),
    }
}

/// A time for people: RFC 3339 to the second, or `-`.
fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => humantime::format_rfc3339_seconds(
            UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
        )
        .to_string(),
        None => "-".into(),
    }
}

fn key_json(key: &KeyRecord) -> serde_json::Value {
    let at = |ms: Option<i64>| ms.map(|_| when(ms));
    json!({
        "id": key.id,
        "name": key.name,
        "role": key.role.as_str(),
        "prefix": key.prefix,
        "max_priority": key.max_priority,
        "created_at": when(Some(key.created_at_ms)),
        "expires_at": at(key.expires_at_ms),
        "last_used_at": at(key.last_used_at_ms),
        "revoked_at": at(key.revoked_at_ms),
        "max_queued": key.max_queued,
        "max_running": key.max_running,
        "creates_per_minute": key.creates_per_minute,
        "weight": key.weight,
    })
}

fn print_table(keys: &[KeyRecord]) {
    let rows: Vec<[String; 12]> = keys
        .iter()
        .map(|k| {
            [
                k.name.clone(),
                k.role.as_str().into(),
                if k.prefix.is_empty() {
                    "-".into()
                } else {
                    format!("plt_{}…", k.prefix)
                },
                k.max_priority.to_string(),
                when(Some(k.created_at_ms)),
                when(k.expires_at_ms),
                when(k.last_used_at_ms),
                when(k.revoked_at_ms),
                quota_text(k.max_queued),
                quota_text(k.max_running),
                quota_text(k.creates_per_minute),
                k.weight.to_string(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "ROLE",
        "PREFIX",
        "MAX_PRIORITY",
        "CREATED",
        "EXPIRES",
        "LAST_USED",
        "REVOKED",
        "MAX_QUEUED",
        "MAX_RUNNING",
        "CREATES/MIN",
        "WEIGHT",
    ];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            role,
            max_priority,
            expires_in,
            max_queued,
            max_running,
            creates_per_minute,
            weight,
            store,
        } => {
            let name = check_key_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let expires_at_ms = expires_in.map(expiry).transpose()?;
            let store = store.open().await?;
            let (key, secret) = store
                .create_key(NewKey {
                    name,
                    role: role.into(),
                    max_priority,
                    expires_at_ms,
                })
                .await
                .map_err(explain)?;
            // Quotas are set on the new key (the server's defaults until then).
            let weight = (weight != pipelet_store::fair::DEFAULT_WEIGHT).then_some(weight);
            if max_queued.is_some()
                || max_running.is_some()
                || creates_per_minute.is_some()
                || weight.is_some()
            {
                store
                    .update_key(
                        &key.name,
                        KeyUpdate {
                            max_queued: max_queued.map(Some),
                            max_running: max_running.map(Some),
                            creates_per_minute: creates_per_minute.map(Some),
                            weight,
                            ..KeyUpdate::default()
                        },
                    )
                    .await
                    .map_err(explain)?;
            }
            println!("{secret}");
        }
        KeysCommand::List { json, store } => {
            let keys = store.open().await?.list_keys().await?;
            if json {
                let keys: Vec<_> = keys.iter().map(key_json).collect();
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_table(&keys);
            }
        }
        KeysCommand::Revoke { name, store } => {
            let key = store
                .open()
                .await?
                .revoke_key(&name)
                .await
                .map_err(explain)?;
            eprintln!("revoked key '{}' ({})", key.name, key.role);
        }
        KeysCommand::Rotate { name, store } => {
            let (_, secret) = store
                .open()
                .await?
                .rotate_key(&name)
                .await
                .map_err(explain)?;
            println!("{secret}");
        }
        KeysCommand::Update {
            name,
            max_priority,
            expires_in,
            no_expiry,
            max_queued,
            max_running,
            creates_per_minute,
            weight,
            store,
        } => {
            let expires_at_ms = match (expires_in, no_expiry) {
                (Some(after), _) => Some(Some(expiry(after)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let (max_queued, max_running, creates_per_minute) = (
                max_queued.map(|q| q.0),
                max_running.map(|q| q.0),
                creates_per_minute.map(|q| q.0),
            );
            if max_priority.is_none()
                && expires_at_ms.is_none()
                && max_queued.is_none()
                && max_running.is_none()
                && creates_per_minute.is_none()
                && weight.is_none()
            {
                anyhow::bail!(
                    "nothing to change: give --max-priority, --expires-in, --no-expiry, \
                     --max-queued, --max-running, --creates-per-minute or --weight"
                );
            }
            let key = store
                .open()
                .await?
                .update_key(
                    &name,
                    KeyUpdate {
                        max_priority,
                        expires_at_ms,
                        max_queued,
                        max_running,
                        creates_per_minute,
                        weight,
                    },
                )
                .await
                .map_err(explain)?;
            eprintln!(
                "updated key '{}': max priority {}, expires {}, max queued {}, max running {}, \
                 creates per minute {}, weight {}",
                key.name,
                key.max_priority,
                when(key.expires_at_ms),
                quota_text(key.max_queued),
                quota_text(key.max_running),
                quota_text(key.creates_per_minute),
                key.weight,
            );
        }
    }
    Ok(())
}
