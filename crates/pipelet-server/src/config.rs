//! `pipelet serve`'s configuration: flags with environment fallbacks, declared once on
//! [`Config`]'s fields, parsed by clap straight into their types and checked once by
//! [`ServeArgs::validate`].

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
/// `--lease-secs` default: a silent worker's job goes back to the queue after 30 s.
pub const DEFAULT_LEASE_SECS: u64 = 30;
/// `--heartbeat-secs` default; six heartbeats fit in one default lease.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 5;
/// `--max-attempts` default: a job fails after its third lost or failed run.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// `--max-wait-for-switch-secs` default: how long (s) a job of another pipeline waits
/// before a worker pays for a model switch to run it.
pub const DEFAULT_MAX_WAIT_FOR_SWITCH_SECS: u64 = 120;
/// `--shutdown-grace-secs` default: running jobs get 30 s to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Delivery tries of one webhook event before it is given up (`--webhook-max-attempts`).
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 10;
/// The first webhook retry waits about this long; later ones back off exponentially.
pub const DEFAULT_WEBHOOK_RETRY_BASE: Duration = Duration::from_secs(5);
/// `--result-ttl` default: a finished job's video and input image are kept 7 days
/// (the flag's own `7d` default must say the same).
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// `--job-ttl` default: a finished job is deleted after 30 days, then its status is 404
/// (the flag's own `30d` default must say the same).
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

/// `pipelet serve`'s command line as parsed: a [`Config`] that [`ServeArgs::validate`]
/// has not checked yet. Every flag is declared once, on [`Config`]'s field.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    flags: Config,
}

/// The server's configuration: each flag (with its environment variable and default) is
/// declared on the field it fills, so adding one is a one-place change. Fields marked
/// `skip` are not flags (tests shorten them). [`ServeArgs::validate`] checks a parsed one;
/// [`Config::for_data_dir`] gives the built-in defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
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
    #[arg(long = "max-prompt-chars", value_name = "MAX_PROMPT_CHARS",
          env = "PIPELET_MAX_PROMPT_CHARS",
          default_value = Limits::default().max_prompt_chars.to_string(),
          value_parser = parse_prompt_limit)]
    pub limits: Limits,
    /// Most jobs waiting at once; creates beyond it get 429.
    #[arg(long, env = "PIPELET_MAX_QUEUED", default_value_t = DEFAULT_MAX_QUEUED)]
    pub max_queued: u64,
    /// Most jobs one key may have waiting at once (0: no limit); a key's own
    /// `--max-queued` (`pipelet keys update`) overrides it. Creates beyond it get 429.
    #[arg(long, env = "PIPELET_MAX_QUEUED_PER_KEY", default_value_t = 0)]
    pub max_queued_per_key: u64,
    /// Most jobs of one key that may run at once (0: no limit); a key's own
    /// `--max-running` overrides it. A key at it waits while others' jobs run.
    #[arg(long, env = "PIPELET_MAX_RUNNING_PER_KEY", default_value_t = 0)]
    pub max_running_per_key: u64,
    /// Creates one key may make per minute, per server (0: no limit): a token bucket
    /// that refills at this rate; a key's own `--creates-per-minute` overrides it.
    #[arg(long, env = "PIPELET_CREATES_PER_MINUTE", default_value_t = 0)]
    pub creates_per_minute: u64,
    /// Creates one key may make at once before `--creates-per-minute` paces it (the
    /// bucket's size); default: the per-minute rate.
    #[arg(long, env = "PIPELET_CREATE_BURST")]
    pub create_burst: Option<u64>,
    /// Seconds a worker's lease lasts without a heartbeat.
    #[arg(long = "lease-secs", value_name = "LEASE_SECS", env = "PIPELET_LEASE_SECS",
          default_value = DEFAULT_LEASE_SECS.to_string(), value_parser = seconds())]
    pub lease: Duration,
    /// Seconds between worker heartbeats (must be well under the lease).
    #[arg(long = "heartbeat-secs", value_name = "HEARTBEAT_SECS",
          env = "PIPELET_HEARTBEAT_SECS",
          default_value = DEFAULT_HEARTBEAT_SECS.to_string(), value_parser = seconds())]
    pub heartbeat: Duration,
    /// Attempts per job before it fails (a lost worker costs one attempt).
    #[arg(long, env = "PIPELET_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Seconds a job of another pipeline may wait before a worker switches models.
    #[arg(long = "max-wait-for-switch-secs", value_name = "MAX_WAIT_FOR_SWITCH_SECS",
          env = "PIPELET_MAX_WAIT_FOR_SWITCH_SECS",
          default_value = DEFAULT_MAX_WAIT_FOR_SWITCH_SECS.to_string(), value_parser = seconds())]
    pub max_wait_for_switch: Duration,
    /// Seconds a running job may take to finish on shutdown before it is re-queued.
    #[arg(long = "shutdown-grace-secs", value_name = "SHUTDOWN_GRACE_SECS",
          env = "PIPELET_SHUTDOWN_GRACE_SECS",
          default_value = DEFAULT_SHUTDOWN_GRACE_SECS.to_string(), value_parser = seconds())]
    pub shutdown_grace: Duration,
    /// Largest result video a worker may upload, in bytes.
    #[arg(long, env = "PIPELET_MAX_RESULT_BYTES", default_value_t = DEFAULT_MAX_RESULT_BYTES)]
    pub max_result_bytes: u64,
    /// Require this key role for GET /metrics (by default it needs no key).
    #[arg(long, env = "PIPELET_METRICS_REQUIRE_KEY", default_value_t = false)]
    pub metrics_require_key: bool,
    /// A JSON model catalog replacing the built-in one.
    #[arg(long = "catalog", value_name = "CATALOG", env = "PIPELET_CATALOG")]
    pub catalog_file: Option<PathBuf>,
    /// The models served: the built-in catalog, or `--catalog`'s once validated.
    #[arg(skip)]
    pub catalog: Catalog,
    // Retention: how long finished jobs keep their result, and their row (`None`:
    // forever); whether inputs stay until the result expires.
    /// How long a finished job's result (and input image) is kept: seconds, or `30m`,
    /// `12h`, `7d`; `0` keeps it forever. Afterwards the result answers 410 Gone.
    #[arg(long, env = "PIPELET_RESULT_TTL", default_value = "7d", value_parser = parse_ttl_flag)]
    pub result_ttl: ::std::option::Option<Duration>,
    /// How long a finished job is kept at all (then its status is 404); same format.
    #[arg(long, env = "PIPELET_JOB_TTL", default_value = "30d", value_parser = parse_ttl_flag)]
    pub job_ttl: ::std::option::Option<Duration>,
    /// Keep input images until the result expires instead of deleting them as soon as
    /// the job finishes.
    #[arg(long, env = "PIPELET_KEEP_INPUTS", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_inputs: bool,
    // Result links (see [`crate::result_links`]).
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
    /// How often the retention cleanup runs.
    #[arg(skip = crate::retention::INTERVAL)]
    pub retention_interval: Duration,
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
    /// About how long the first webhook retry waits.
    #[arg(skip = DEFAULT_WEBHOOK_RETRY_BASE)]
    pub webhook_retry_base: Duration,
    // HTTPS (see [`crate::tls`]).
    /// Serve https with this certificate chain (PEM, the server's certificate first);
    /// needs --tls-key. Re-read, with the key, on SIGHUP.
    #[arg(long, env = "PIPELET_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PIPELET_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// Whole seconds on the command line, a [`Duration`] in the configuration.
fn seconds() -> impl clap::builder::TypedValueParser<Value = Duration> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64).map(Duration::from_secs)
}

/// `--max-prompt-chars` into the default [`Limits`] (parsed as clap parses a `usize`).
fn parse_prompt_limit(text: &str) -> Result<Limits, std::num::ParseIntError> {
    Ok(Limits {
        max_prompt_chars: text.parse()?,
        ..Limits::default()
    })
}

/// [`parse_ttl`] for the flags, whose fields hold the `Option` itself.
fn parse_ttl_flag(text: &str) -> Result<Option<Duration>, String> {
    parse_ttl(text).map(|ttl| ttl.0)
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

/// A flag or flag combination `pipelet serve` refuses; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ServeArgs {
    /// Checks the parsed flags (each alone and together) and loads `--catalog`: the
    /// configuration the server runs with.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut config = self.flags;
        let bad = |s: String| Err(ConfigError(s));
        let (heartbeat_secs, lease_secs) = (config.heartbeat.as_secs(), config.lease.as_secs());
        if heartbeat_secs == 0 || heartbeat_secs * 2 > lease_secs {
            return bad(format!(
                "--heartbeat-secs ({heartbeat_secs}) must be at least 1 and at most half of --lease-secs ({lease_secs})"
            ));
        }
        if config.max_attempts == 0 {
            return bad("--max-attempts must be at least 1".into());
        }
        if config.webhook_max_attempts == 0 {
            return bad("--webhook-max-attempts must be at least 1".into());
        }
        if config.max_body_bytes < 1024 {
            return bad("--max-body-bytes must be at least 1024".into());
        }
        if config.limits.max_prompt_chars == 0 {
            return bad("--max-prompt-chars must be at least 1".into());
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return bad(
                "--tls-cert and --tls-key go together: give both (PEM files) to serve https, \
                 or neither to serve plain http"
                    .into(),
            );
        }
        config.public_url = match config.public_url {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return bad(format!(
                    "--public-url {url:?} must start with http:// or https://"
                ));
            }
            other => other.map(|u| u.trim_end_matches('/').to_string()),
        };
        if let Some(path) = &config.catalog_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read --catalog {}: {e}", path.display()))
            })?;
            config.catalog = Catalog::from_json(&text)
                .map_err(|e| ConfigError(format!("--catalog {}: {e}", path.display())))?;
        }
        if let Some(url) = &config.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad("--database-url must be a postgres:// URL (leave it out for the embedded SQLite store)".into());
        }
        // Blobs in the data dir are this server's alone: a second server on the same
        // database would fail every i2v job and result of this one.
        if config.database_url.is_some() && config.blob_url.is_none() && !config.single_server {
            return bad(format!(
                "--database-url without --blob-url keeps images and videos in {}, which \
                 other servers on the same database cannot read. Give every server the same \
                 shared storage with --blob-url s3://bucket/prefix (or gs://, az://, or \
                 file:///path/of/a/shared/mount), or, if this is the only server on this \
                 database, add --single-server (PIPELET_SINGLE_SERVER=1)",
                config.data_dir.join("blobs").display()
            ));
        }
        if config.presign
            && !config
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
        Ok(config)
    }
}

impl Config {
    /// `https` when the server serves TLS itself (`--tls-cert`), else `http`: the
    /// scheme of the links it builds without `--public-url`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Built-in defaults (ignoring the environment) with the server on a free loopback
    /// port and its data in `data_dir`: what tests and embedders start from.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::defaults();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir.into();
        config
    }

    /// The flags' own defaults: an empty command line parsed with the environment
    /// variables switched off, so the defaults are written only on the flags.
    fn defaults() -> Config {
        use clap::{Args, FromArgMatches};
        let command =
            Config::augment_args(clap::Command::new("pipelet-serve")).mut_args(|arg| arg.env(None));
        let parsed = command
            .try_get_matches_from(["pipelet-serve"])
            .and_then(|matches| Config::from_arg_matches(&matches));
        // Only a wrong default on a flag could fail here, and the unit tests parse them; a
        // hand-written fallback Config would duplicate every default this one-place
        // declaration exists to avoid.
        #[allow(clippy::expect_used)]
        let config = parsed.expect("the built-in defaults of `pipelet serve` parse");
        config
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
    fn built_in_defaults_are_the_flags_defaults() {
        let config = Config::for_data_dir("/srv/pipelet");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(config.data_dir, PathBuf::from("/srv/pipelet"));
        assert_eq!(config.lease, Duration::from_secs(DEFAULT_LEASE_SECS));
        assert_eq!(
            config.heartbeat,
            Duration::from_secs(DEFAULT_HEARTBEAT_SECS)
        );
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.retention_interval, crate::retention::INTERVAL);
        // The same as an empty command line, but for where it listens and keeps data.
        let parsed = validate(&[]).expect("defaults");
        let same = Config {
            listen: parsed.listen,
            data_dir: parsed.data_dir.clone(),
            ..config
        };
        assert_eq!(format!("{same:?}"), format!("{parsed:?}"));
    }

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

    #[test]
    fn tls_flags_go_together() {
        let config = validate(&[]).expect("defaults");
        assert_eq!((config.tls_cert, config.tls_key), (None, None));
        assert_eq!(Config::for_data_dir("/d").scheme(), "http");
        for args in [["--tls-cert", "cert.pem"], ["--tls-key", "key.pem"]] {
            let refused = validate(&args)
                .expect_err("one without the other")
                .to_string();
            assert!(
                refused.contains("--tls-cert and --tls-key go together"),
                "{refused}"
            );
        }
        let config = validate(&["--tls-cert", "cert.pem", "--tls-key", "key.pem"]).expect("both");
        assert_eq!(config.tls_cert, Some(PathBuf::from("cert.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("key.pem")));
        assert_eq!(config.scheme(), "https");
    }
}
