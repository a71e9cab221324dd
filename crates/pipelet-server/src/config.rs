//! `pipelet serve`'s configuration: flags with environment fallbacks, parsed by clap and
//! checked once by [`ServeArgs::validate`] into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pipelet_api::{Catalog, Limits};

/// Default request body bound (the base64 of a large input image fits well within it).
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// Queued jobs beyond which creates get 429.
pub const DEFAULT_MAX_QUEUED: u64 = 100_000;
/// A 7 s 1280x720 video is a few MB; this leaves room for high bitrates.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
pub const DEFAULT_LEASE_SECS: u64 = 30;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 5;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_MAX_WAIT_FOR_SWITCH_SECS: u64 = 120;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Delivery tries of one webhook event before it is given up (`--webhook-max-attempts`).
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 10;
/// The first webhook retry waits about this long; later ones back off exponentially.
pub const DEFAULT_WEBHOOK_RETRY_BASE: Duration = Duration::from_secs(5);
/// Retention defaults (the `--result-ttl` and `--job-ttl` flags say the same).
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_JOB_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a result's `video.url` link works (`--result-url-ttl`).
pub const DEFAULT_RESULT_URL_TTL: Duration = Duration::from_secs(2 * 3600);
/// Longest `--result-url-ttl` (S3 presigned URLs allow at most 7 days too).
const MAX_RESULT_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the result's `video.data_uri` holds (`--result-data-uri`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ResultDataUri {
    /// Plain base64 of the MP4 (the spec's default).
    #[default]
    Base64,
    /// The same link as `video.url`, as the public service does with presigned URLs.
    Url,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PIPELET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the embedded database, blobs and admin key live.
    #[arg(long, env = "PIPELET_DATA_DIR", default_value = "./pipelet-data")]
    pub data_dir: PathBuf,
    /// A shared PostgreSQL database (postgres://…) instead of the embedded SQLite file,
    /// so several API servers can serve one queue.
    #[arg(long, env = "PIPELET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Shared object storage for images and videos (s3://bucket/prefix, gs://…, az://…)
    /// instead of `<data-dir>/blobs`; credentials from the provider's usual env vars.
    #[arg(long, env = "PIPELET_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Declares this the only server on --database-url, so that images and videos may stay
    /// in `<data-dir>/blobs` without --blob-url; another server on that database then
    /// refuses to start (and this one refuses while another runs).
    #[arg(long, env = "PIPELET_SINGLE_SERVER", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub single_server: bool,
    /// In-process preview workers; 0 runs a pure API server whose jobs stay queued.
    #[arg(long, env = "PIPELET_WORKERS", default_value_t = 1)]
    pub workers: u32,
    /// Base URL used in response URLs (e.g. https://video.example.com); by default
    /// they are built from the request's Host header.
    #[arg(long, env = "PIPELET_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes (bigger gets 413).
    #[arg(long, env = "PIPELET_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest prompt accepted, in characters.
    #[arg(long, env = "PIPELET_MAX_PROMPT_CHARS", default_value_t = Limits::default().max_prompt_chars)]
    pub max_prompt_chars: usize,
    /// Most jobs waiting at once; creates beyond it get 429.
    #[arg(long, env = "PIPELET_MAX_QUEUED", default_value_t = DEFAULT_MAX_QUEUED)]
    pub max_queued: u64,
    /// Seconds a worker's lease lasts without a heartbeat.
    #[arg(long, env = "PIPELET_LEASE_SECS", default_value_t = DEFAULT_LEASE_SECS)]
    pub lease_secs: u64,
    /// Seconds between worker heartbeats (must be well under the lease).
    #[arg(long, env = "PIPELET_HEARTBEAT_SECS", default_value_t = DEFAULT_HEARTBEAT_SECS)]
    pub heartbeat_secs: u64,
    /// Attempts per job before it fails (a lost worker costs one attempt).
    #[arg(long, env = "PIPELET_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Seconds a job of another pipeline may wait before a worker switches models.
    #[arg(long, env = "PIPELET_MAX_WAIT_FOR_SWITCH_SECS", default_value_t = DEFAULT_MAX_WAIT_FOR_SWITCH_SECS)]
    pub max_wait_for_switch_secs: u64,
    /// Seconds a running job may take to finish on shutdown before it is re-queued.
    #[arg(long, env = "PIPELET_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// Largest result video a worker may upload, in bytes.
    #[arg(long, env = "PIPELET_MAX_RESULT_BYTES", default_value_t = DEFAULT_MAX_RESULT_BYTES)]
    pub max_result_bytes: u64,
    /// Require this key role for GET /metrics (by default it needs no key).
    #[arg(long, env = "PIPELET_METRICS_REQUIRE_KEY", default_value_t = false)]
    pub metrics_require_key: bool,
    /// A JSON model catalog replacing the built-in one.
    #[arg(long, env = "PIPELET_CATALOG")]
    pub catalog: Option<PathBuf>,
    // Retention.
    /// How long a finished job's result (and input image) is kept: seconds, or `30m`,
    /// `12h`, `7d`; `0` keeps it forever. Afterwards the result answers 410 Gone.
    #[arg(long, env = "PIPELET_RESULT_TTL", default_value = "7d", value_parser = parse_ttl)]
    pub result_ttl: Ttl,
    /// How long a finished job is kept at all (then its status is 404); same format.
    #[arg(long, env = "PIPELET_JOB_TTL", default_value = "30d", value_parser = parse_ttl)]
    pub job_ttl: Ttl,
    /// Keep input images until the result expires instead of deleting them as soon as
    /// the job finishes.
    #[arg(long, env = "PIPELET_KEEP_INPUTS", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_inputs: bool,
    // Result links.
    /// What the result's `video.data_uri` holds: `base64` (the MP4 itself) or `url` (the
    /// link of `video.url`, so results stay small).
    #[arg(long, env = "PIPELET_RESULT_DATA_URI", value_enum, default_value_t = ResultDataUri::Base64)]
    pub result_data_uri: ResultDataUri,
    /// How long the signed `video.url` link of a result works: seconds, or `30m`, `2h`
    /// (at most 7 days).
    #[arg(long, env = "PIPELET_RESULT_URL_TTL", default_value = "2h", value_parser = parse_url_ttl)]
    pub result_url_ttl: Duration,
    /// With --blob-url s3://…, make `video.url` an S3 presigned URL (downloads go to S3
    /// directly) instead of a link signed and served by pipelet.
    #[arg(long, env = "PIPELET_PRESIGN", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub presign: bool,
    // Webhooks.
    /// Delivery tries of one webhook event (the first included) before it is given up;
    /// retries back off exponentially from about 5 s, so 10 spread over hours.
    #[arg(long, env = "PIPELET_WEBHOOK_MAX_ATTEMPTS", default_value_t = DEFAULT_WEBHOOK_MAX_ATTEMPTS)]
    pub webhook_max_attempts: u32,
    /// Allow webhook URLs whose host is or resolves to a loopback, private, link-local or
    /// metadata address (refused by default against server-side request forgery): for
    /// internal deployments and tests.
    #[arg(long, env = "PIPELET_WEBHOOK_ALLOW_PRIVATE", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,
}

/// Parses `--result-url-ttl`: like [`parse_ttl`] but never forever (a link must expire).
pub fn parse_url_ttl(text: &str) -> Result<Duration, String> {
    match parse_ttl(text)? {
        Ttl(Some(d)) if d <= MAX_RESULT_URL_TTL => Ok(d),
        Ttl(Some(_)) => Err(format!("{text:?} is longer than 7 days")),
        Ttl(None) => Err(format!(
            "{text:?}: result links must expire; give e.g. 30m or 2h"
        )),
    }
}

/// A retention period: `None` keeps forever (`0` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

/// Longest retention period accepted (100 years): beyond it the millisecond arithmetic
/// of timestamps could overflow, and `0` says "forever" anyway.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `604800` (seconds), `30m`, `12h`, `7d` (any humantime duration) or `0`
/// (forever).
pub fn parse_ttl(text: &str) -> Result<Ttl, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not a duration ({e}): give seconds, or e.g. 30m, 12h, 7d; 0 keeps forever")
        })?,
    };
    if duration > MAX_TTL {
        return Err(format!(
            "{text:?} is longer than 100 years; use 0 to keep forever"
        ));
    }
    Ok(Ttl((!duration.is_zero()).then_some(duration)))
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub blob_url: Option<String>,
    /// `--single-server`: the only server on its PostgreSQL database (no meaning on SQLite,
    /// whose data-dir lock already allows one server).
    pub single_server: bool,
    pub workers: u32,
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub limits: Limits,
    pub max_queued: u64,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub max_attempts: u32,
    pub max_wait_for_switch: Duration,
    pub shutdown_grace: Duration,
    pub catalog: Catalog,
    pub max_result_bytes: u64,
    pub metrics_require_key: bool,
    /// Retention: how long finished jobs keep their result, and their row (`None`:
    /// forever); whether inputs stay until the result expires.
    pub result_ttl: Option<Duration>,
    pub job_ttl: Option<Duration>,
    pub keep_inputs: bool,
    /// `--result-data-uri`, `--result-url-ttl`, `--presign` (see [`crate::result_links`]).
    pub result_data_uri: ResultDataUri,
    pub result_url_ttl: Duration,
    pub presign: bool,
    /// How often the retention cleanup runs (not a flag; tests shorten it).
    pub retention_interval: Duration,
    /// `--webhook-max-attempts` (at least 1) and `--webhook-allow-private`.
    pub webhook_max_attempts: u32,
    pub webhook_allow_private: bool,
    /// About how long the first webhook retry waits (not a flag; tests shorten it).
    pub webhook_retry_base: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ServeArgs {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let bad = |s: String| Err(ConfigError(s));
        if self.heartbeat_secs == 0 || self.heartbeat_secs * 2 > self.lease_secs {
            return bad(format!(
                "--heartbeat-secs ({}) must be at least 1 and at most half of --lease-secs ({})",
                self.heartbeat_secs, self.lease_secs
            ));
        }
        if self.max_attempts == 0 {
            return bad("--max-attempts must be at least 1".into());
        }
        if self.webhook_max_attempts == 0 {
            return bad("--webhook-max-attempts must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return bad("--max-body-bytes must be at least 1024".into());
        }
        if self.max_prompt_chars == 0 {
            return bad("--max-prompt-chars must be at least 1".into());
        }
        let public_url = match self.public_url {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return bad(format!(
                    "--public-url {url:?} must start with http:// or https://"
                ));
            }
            other => other.map(|u| u.trim_end_matches('/').to_string()),
        };
        let catalog = match &self.catalog {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read --catalog {}: {e}", path.display()))
                })?;
                Catalog::from_json(&text)
                    .map_err(|e| ConfigError(format!("--catalog {}: {e}", path.display())))?
            }
            None => Catalog::default(),
        };
        let limits = Limits {
            max_prompt_chars: self.max_prompt_chars,
            ..Limits::default()
        };
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad("--database-url must be a postgres:// URL (leave it out for the embedded SQLite store)".into());
        }
        // Blobs in the data dir are this server's alone: a second server on the same
        // database would fail every i2v job and result of this one.
        if self.database_url.is_some() && self.blob_url.is_none() && !self.single_server {
            return bad(format!(
                "--database-url without --blob-url keeps images and videos in {}, which \
                 other servers on the same database cannot read. Give every server the same \
                 shared storage with --blob-url s3://bucket/prefix (or gs://, az://, or \
                 file:///path/of/a/shared/mount), or, if this is the only server on this \
                 database, add --single-server (PIPELET_SINGLE_SERVER=1)",
                self.data_dir.join("blobs").display()
            ));
        }
        if self.presign
            && !self
                .blob_url
                .as_deref()
                .is_some_and(|u| u.starts_with("s3://"))
        {
            return bad(
                "--presign makes result links S3 presigned URLs, so it needs S3 blob storage \
                 (--blob-url s3://bucket/prefix); without it, leave --presign out and pipelet \
                 signs and serves the links itself"
                    .into(),
            );
        }
        Ok(Config {
            listen: self.listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            blob_url: self.blob_url,
            single_server: self.single_server,
            workers: self.workers,
            public_url,
            max_body_bytes: self.max_body_bytes,
            limits,
            max_queued: self.max_queued,
            lease: Duration::from_secs(self.lease_secs),
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            max_attempts: self.max_attempts,
            max_wait_for_switch: Duration::from_secs(self.max_wait_for_switch_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            catalog,
            max_result_bytes: self.max_result_bytes,
            metrics_require_key: self.metrics_require_key,
            result_ttl: self.result_ttl.0,
            job_ttl: self.job_ttl.0,
            keep_inputs: self.keep_inputs,
            result_data_uri: self.result_data_uri,
            result_url_ttl: self.result_url_ttl,
            presign: self.presign,
            retention_interval: crate::retention::INTERVAL,
            webhook_max_attempts: self.webhook_max_attempts,
            webhook_allow_private: self.webhook_allow_private,
            webhook_retry_base: DEFAULT_WEBHOOK_RETRY_BASE,
        })
    }
}

impl Config {
    /// Built-in defaults (ignoring the environment) with the server on a free loopback
    /// port and its data in `data_dir`: what tests and embedders start from.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database_url: None,
            blob_url: None,
            single_server: false,
            workers: 1,
            public_url: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            limits: Limits::default(),
            max_queued: DEFAULT_MAX_QUEUED,
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
            heartbeat: Duration::from_secs(DEFAULT_HEARTBEAT_SECS),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_wait_for_switch: Duration::from_secs(DEFAULT_MAX_WAIT_FOR_SWITCH_SECS),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            catalog: Catalog::default(),
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            metrics_require_key: false,
            result_ttl: Some(DEFAULT_RESULT_TTL),
            job_ttl: Some(DEFAULT_JOB_TTL),
            keep_inputs: false,
            result_data_uri: ResultDataUri::Base64,
            result_url_ttl: DEFAULT_RESULT_URL_TTL,
            presign: false,
            retention_interval: crate::retention::INTERVAL,
            webhook_max_attempts: DEFAULT_WEBHOOK_MAX_ATTEMPTS,
            webhook_allow_private: false,
            webhook_retry_base: DEFAULT_WEBHOOK_RETRY_BASE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn validate(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} parses: {e}"));
        cli.serve.validate()
    }

    const PG: &str = "postgres://pipelet@db/pipelet";

    #[test]
    fn postgres_without_shared_blobs_needs_single_server() {
        let refused = validate(&["--database-url", PG, "--data-dir", "/srv/pipelet"])
            .expect_err("blobs in the data dir on a shared database are refused")
            .to_string();
        for what in [
            "--blob-url s3://",
            "file:///",
            "--single-server",
            "/srv/pipelet/blobs",
        ] {
            assert!(refused.contains(what), "{what:?} missing from: {refused}");
        }

        let alone = validate(&["--database-url", PG, "--single-server"]).expect("single server");
        assert!(alone.single_server);
        for url in ["s3://bucket/pipelet", "file:///mnt/shared/pipelet"] {
            let shared = validate(&["--database-url", PG, "--blob-url", url]).expect(url);
            assert!(!shared.single_server);
        }
        // SQLite allows one server per data dir anyway.
        assert!(validate(&[]).is_ok());
        assert!(validate(&["--single-server"]).is_ok());
    }

    #[test]
    fn retention_periods_take_seconds_units_or_zero_for_forever() {
        let config = validate(&[]).expect("defaults");
        assert_eq!(config.result_ttl, Some(DEFAULT_RESULT_TTL));
        assert_eq!(config.job_ttl, Some(DEFAULT_JOB_TTL));
        assert!(!config.keep_inputs);
        let config = validate(&["--result-ttl", "0", "--job-ttl", "90", "--keep-inputs"])
            .expect("zero and seconds");
        assert_eq!(config.result_ttl, None, "0 keeps forever");
        assert_eq!(config.job_ttl, Some(Duration::from_secs(90)));
        assert!(config.keep_inputs);
        for (text, secs) in [
            ("30m", 1800),
            ("12h", 43_200),
            ("7d", 604_800),
            ("1h 30m", 5400),
        ] {
            assert_eq!(
                parse_ttl(text),
                Ok(Ttl(Some(Duration::from_secs(secs)))),
                "{text}"
            );
        }
        for bad in ["soon", "-5", "7 parsecs", "1000000y"] {
            let detail = parse_ttl(bad).expect_err(bad);
            assert!(detail.contains(bad), "{detail}");
        }
    }

    #[test]
    fn result_links_default_to_base64_and_two_hours() {
        let config = validate(&[]).expect("defaults");
        assert_eq!(config.result_data_uri, ResultDataUri::Base64);
        assert_eq!(config.result_url_ttl, DEFAULT_RESULT_URL_TTL);
        assert!(!config.presign);
        let config =
            validate(&["--result-data-uri", "url", "--result-url-ttl", "30m"]).expect("url mode");
        assert_eq!(config.result_data_uri, ResultDataUri::Url);
        assert_eq!(config.result_url_ttl, Duration::from_secs(1800));
        for bad in ["0", "8d"] {
            assert!(parse_url_ttl(bad).is_err(), "{bad}");
        }
        // --presign is S3's signer: refused for other blob stores, with the reason.
        for args in [
            vec!["--presign"],
            vec!["--presign", "--blob-url", "gs://bucket/p"],
        ] {
            let refused = validate(&args).expect_err("presign without s3").to_string();
            assert!(refused.contains("--blob-url s3://"), "{refused}");
        }
        let ok = validate(&["--presign", "--blob-url", "s3://bucket/p"]).expect("s3");
        assert!(ok.presign);
    }

    #[test]
    fn webhook_flags() {
        let config = validate(&[]).expect("defaults");
        assert_eq!(config.webhook_max_attempts, 10);
        assert!(
            !config.webhook_allow_private,
            "private receivers refused by default"
        );
        assert_eq!(config.webhook_retry_base, Duration::from_secs(5));
        let config = validate(&["--webhook-max-attempts", "3", "--webhook-allow-private"])
            .expect("webhook flags");
        assert_eq!(config.webhook_max_attempts, 3);
        assert!(config.webhook_allow_private);
        let refused = validate(&["--webhook-max-attempts", "0"])
            .expect_err("no attempt at all")
            .to_string();
        assert!(refused.contains("--webhook-max-attempts"), "{refused}");
    }
}
