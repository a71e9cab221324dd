//! `pipelet keys …`: key management straight on the store, so it works with or
//! without a running server.

use std::path::PathBuf;

use clap::Subcommand;
use pipelet_server::app::database_path;
use pipelet_store::postgres::PgStore;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{NewKey, Role, Store};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (only the key) on stdout.
    Create {
        /// A name to recognise the key by (shown in logs and cancel records).
        #[arg(long)]
        name: String,
        /// client: the queue API for its own requests; worker: only the worker API;
        /// admin: the queue API for every key's requests.
        #[arg(long, value_enum, default_value = "client")]
        role: RoleArg,
        /// Most `priority` the key's requests may add to their tier's priority.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        max_priority: i64,
        /// The server's data directory (its embedded database).
        #[arg(long, env = "PIPELET_DATA_DIR", default_value = "./pipelet-data")]
        data_dir: PathBuf,
        /// The server's PostgreSQL database, when it uses one.
        #[arg(long, env = "PIPELET_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
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

/// Names are for people; keep them printable and short.
const MAX_KEY_NAME_CHARS: usize = 100;

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            role,
            max_priority,
            data_dir,
            database_url,
        } => {
            let name = name.trim().to_string();
            if name.is_empty()
                || name.chars().count() > MAX_KEY_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                anyhow::bail!("--name must be 1 to {MAX_KEY_NAME_CHARS} printable characters");
            }
            let store: Box<dyn Store> = match database_url {
                Some(url) => Box::new(PgStore::connect(&url).await?),
                None => {
                    std::fs::create_dir_all(&data_dir)?;
                    Box::new(SqliteStore::open(&database_path(&data_dir)).await?)
                }
            };
            let (_, secret) = store
                .create_key(NewKey {
                    name,
                    role: role.into(),
                    max_priority,
                })
                .await?;
            println!("{secret}");
            Ok(())
        }
    }
}
