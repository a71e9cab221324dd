//! The client verbs for people: `submit` (follows the request, writes the MP4),
//! `status` (a one-line summary, or the raw JSON), `cancel` (`--force` stops a running
//! request), `result`, `list` (the key's recent requests) and `usage` (what a key used),
//! over the public queue API.
//!
//! [`summary`] words a status as one line; [`progress`] shows a followed request (a bar
//! on a terminal, plain lines otherwise).

mod list;
mod progress;
mod summary;
mod usage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use pipelet_api::{Catalog, Pipeline};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub use list::{ListArgs, list};
use progress::Display;
use summary::StatusView;
pub use usage::{UsageArgs, usage};

/// Largest image `submit --image` reads (the server's own limit is 10 MiB decoded).
const MAX_IMAGE_FILE_BYTES: u64 = 10 * 1024 * 1024;
const POLL_EVERY: Duration = Duration::from_millis(250);
/// A status poll that takes longer than this is an error, not a silent hang.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of a create that failed in transit or with a 5xx (see `create_with_retries`).
const CREATE_ATTEMPTS: u32 = 3;
const CREATE_RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "PIPELET_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API key (default: the admin key in $PIPELET_DATA_DIR or ./pipelet-data).
    #[arg(long, env = "PIPELET_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// Model id, e.g. wan22-fast-t2v (text-to-video) or wan22-fast-i2v (image-to-video).
    model: String,
    /// What the video should show.
    #[arg(long)]
    prompt: String,
    /// Input image for an image-to-video model (JPEG, PNG or WebP); required by those
    /// models and refused by text-to-video ones.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Output size for text-to-video, e.g. 1280x720.
    #[arg(long, conflicts_with = "height")]
    size: Option<String>,
    /// Output height (image-to-video: 480 or 720).
    #[arg(long)]
    height: Option<u32>,
    /// Seconds of video.
    #[arg(long)]
    duration: Option<u32>,
    /// Priority added to the model tier's own (higher runs sooner; bounded by the key's
    /// maximum).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// Random seed, for a repeatable video.
    #[arg(long)]
    seed: Option<u64>,
    /// More denoising steps (slower, better).
    #[arg(long)]
    higher_quality: bool,
    /// Image-to-video: the image's shorter side becomes the height.
    #[arg(long)]
    best_resolution: bool,
    /// Where to write the MP4 (default: <request id>.mp4).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print the request id and return without waiting.
    #[arg(long)]
    no_wait: bool,
    /// A URL that gets a signed POST on each event of the request (acquired, completed,
    /// failed, cancelled, retried); sent as `?fal_webhook=`. Verify the signatures with the
    /// secret of `GET /webhooks/secret`.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// The request id.
    id: String,
    /// The model the request was made under (found automatically when omitted).
    #[arg(long)]
    model: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Print the server's status JSON instead of the one-line summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Also stop a request that is already running: its worker is told to stop and the
    /// request ends CANCELLED.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ResultArgs {
    #[command(flatten)]
    request: RequestArgs,
    /// Where to write the MP4 (default: <request id>.mp4).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

fn default_key() -> Option<String> {
    let dir = std::env::var("PIPELET_DATA_DIR").unwrap_or_else(|_| "./pipelet-data".into());
    std::fs::read_to_string(Path::new(&dir).join("admin.key"))
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// `401 Unauthorized: <the server's detail>`.
fn error_of(status: StatusCode, body: &Value) -> anyhow::Error {
    let detail = body
        .get("detail")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    anyhow::anyhow!("{status}: {detail}")
}

impl Client {
    fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let key = args.key.clone().or_else(default_key).context(
            "no API key: pass --key or set PIPELET_KEY (create one with `pipelet keys create`)",
        )?;
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: args.server.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// Sends and returns the status and JSON body, whatever the status.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let response = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    /// Sends and returns the JSON body, or fails with the server's `detail`.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let (status, body) = self.send(req).await?;
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(error_of(status, &body))
        }
    }

    fn request_url(&self, model: &str, id: &str) -> String {
        format!("{}/queue/{model}/requests/{id}", self.base)
    }

    /// The server's `GET /models` list (it needs no key).
    async fn models(&self) -> anyhow::Result<Vec<Value>> {
        let (_, models) = self
            .call(self.http.get(format!("{}/models", self.base)))
            .await?;
        Ok(models["models"].as_array().cloned().unwrap_or_default())
    }

    /// The model a request was made under: the given one, or the first that knows it.
    async fn find_model(&self, req: &RequestArgs) -> anyhow::Result<String> {
        if let Some(model) = &req.model {
            return Ok(model.clone());
        }
        let models = self
            .models()
            .await
            .context("cannot list models to find the request (pass --model)")?;
        let ids = models
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string));
        for model in ids {
            let url = format!("{}/status", self.request_url(&model, &req.id));
            let r = self.http.get(url).bearer_auth(&self.key).send().await?;
            if r.status() == StatusCode::OK {
                return Ok(model);
            }
        }
        bail!("request {} not found under any model for this key", req.id)
    }

    /// The pipeline of `model`: from the built-in catalog without a request, else from
    /// the server's `GET /models` (an operator's own catalog). `None` when neither
    /// knows it: the server then says what is wrong.
    async fn pipeline_of(&self, model: &str) -> Option<Pipeline> {
        if let Some(spec) = Catalog::default().get(model) {
            return Some(spec.pipeline);
        }
        let models = self.models().await.ok()?;
        models
            .iter()
            .find(|m| m["id"].as_str() == Some(model))
            .and_then(|m| m["pipeline"].as_str())
            .and_then(Pipeline::parse)
    }

    async fn status(&self, model: &str, id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/status", self.request_url(model, id));
        Ok(self
            .call(self.http.get(url).timeout(STATUS_TIMEOUT))
            .await?
            .1)
    }

    /// Fetches the result and writes the MP4; returns its size.
    async fn save_result(&self, model: &str, id: &str, output: &Path) -> anyhow::Result<usize> {
        let (_, body) = self
            .call(self.http.get(self.request_url(model, id)))
            .await?;
        let b64 = body["video"]["data_uri"]
            .as_str()
            .context("the result has no video.data_uri")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("video.data_uri is not base64")?;
        std::fs::write(output, &bytes)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok(bytes.len())
    }
}

/// Refuses `--image` with a text-to-video model, and its absence with an image-to-video
/// one, before anything is sent.
fn check_image_use(model: &str, pipeline: Pipeline, has_image: bool) -> anyhow::Result<()> {
    match (pipeline, has_image) {
        (Pipeline::T2v, true) => bail!(
            "{model} is a text-to-video model and takes no --image; drop --image, or use an \
             image-to-video model such as wan22-fast-i2v"
        ),
        (Pipeline::I2v, false) => bail!(
            "{model} is an image-to-video model: pass the input picture with --image FILE \
             (JPEG, PNG or WebP), or use a text-to-video model such as wan22-fast-t2v"
        ),
        _ => Ok(()),
    }
}

fn body_of(args: &SubmitArgs) -> anyhow::Result<Value> {
    let mut body = json!({ "prompt": args.prompt });
    if let Some(size) = &args.size {
        let (w, h) = size
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .with_context(|| format!("--size {size:?} must look like 1280x720"))?;
        body["width"] = json!(w);
        body["height"] = json!(h);
    }
    if let Some(h) = args.height {
        body["height"] = json!(h);
    }
    if let Some(d) = args.duration {
        body["duration"] = json!(d);
    }
    if let Some(p) = args.priority {
        body["priority"] = json!(p);
    }
    if let Some(s) = args.seed {
        body["seed"] = json!(s);
    }
    if args.higher_quality {
        body["higher_quality_with_more_steps"] = json!(true);
    }
    if args.best_resolution {
        body["use_best_resolution"] = json!(true);
    }
    if let Some(path) = &args.image {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if size > MAX_IMAGE_FILE_BYTES {
            bail!(
                "{} is {size} bytes; images up to {MAX_IMAGE_FILE_BYTES} bytes are accepted",
                path.display()
            );
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        body["data_uri"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Ok(body)
}

/// Follows a request to its end, showing it on stderr (see [`progress`]). Returns the
/// final status.
async fn follow(client: &Client, model: &str, id: &str) -> anyhow::Result<Value> {
    let mut display = Display::for_stderr();
    loop {
        let status = client.status(model, id).await?;
        let view = StatusView::from_body(&status);
        if view.is_finished() {
            display.finish(&view);
            return Ok(status);
        }
        display.update(&view);
        tokio::time::sleep(POLL_EVERY).await;
    }
}

pub async fn submit(server: ServerArgs, args: SubmitArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    if let Some(pipeline) = client.pipeline_of(&args.model).await {
        check_image_use(&args.model, pipeline, args.image.is_some())?;
    }
    let body = body_of(&args)?;
    let url = format!("{}/queue/{}", client.base, args.model);
    let created = create_with_retries(&client, &url, &body, args.webhook.as_deref()).await?;
    let id = created["request_id"]
        .as_str()
        .context("no request_id in the answer")?
        .to_string();
    if args.no_wait {
        eprintln!(
            "request {id} queued at position {}",
            created["queue_position"]
        );
        println!("{id}");
        return Ok(());
    }
    eprintln!("request {id} submitted to {}", args.model);
    let status = follow(&client, &args.model, &id).await?;
    finish(&client, &args.model, &id, &status, args.output).await
}

/// Posts a create, retrying a lost connection or a 5xx a few times under one
/// `Idempotency-Key` (fresh per submit): if an earlier try was committed and only its
/// answer was lost, the server answers that request again instead of queueing another.
async fn create_with_retries(
    client: &Client,
    url: &str,
    body: &Value,
    webhook: Option<&str>,
) -> anyhow::Result<Value> {
    let idempotency_key = uuid::Uuid::new_v4().to_string();
    let mut attempt = 1;
    loop {
        let mut req = client
            .http
            .post(url)
            .header("Idempotency-Key", &idempotency_key)
            .json(body);
        if let Some(webhook) = webhook {
            req = req.query(&[("fal_webhook", webhook)]);
        }
        let error = match client.send(req).await {
            Ok((status, created)) if status.is_success() => return Ok(created),
            Ok((status, detail)) if status.is_server_error() => error_of(status, &detail),
            Ok((status, detail)) => return Err(error_of(status, &detail)),
            Err(e) => e,
        };
        if attempt >= CREATE_ATTEMPTS {
            return Err(error);
        }
        eprintln!("create failed ({error:#}); retrying");
        tokio::time::sleep(CREATE_RETRY_AFTER * attempt).await;
        attempt += 1;
    }
}

async fn finish(
    client: &Client,
    model: &str,
    id: &str,
    status: &Value,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let view = StatusView::from_body(status);
    if view.status != "COMPLETED" {
        bail!("request {id} ended {}", view.line());
    }
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{id}.mp4")));
    let size = client.save_result(model, id, &output).await?;
    eprintln!("wrote {} ({size} bytes)", output.display());
    println!("{}", output.display());
    Ok(())
}

pub async fn status(server: ServerArgs, args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let model = client.find_model(&args.request).await?;
    let status = client.status(&model, &args.request.id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("{}", StatusView::from_body(&status).line());
    }
    Ok(())
}

pub async fn cancel(server: ServerArgs, args: CancelArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let id = &args.request.id;
    let model = client.find_model(&args.request).await?;
    let mut url = format!("{}/cancel", client.request_url(&model, id));
    if args.force {
        url.push_str("?force=true");
    }
    let (status, body) = client.send(client.http.put(url)).await?;
    match status {
        StatusCode::ACCEPTED => eprintln!(
            "request {id} is running: its worker was told to stop and it will end CANCELLED \
             (see `pipelet status {id}`)"
        ),
        s if s.is_success() => eprintln!("request {id} cancelled"),
        // The server's detail names its query parameter; the CLI has a flag for it.
        StatusCode::CONFLICT if !args.force && body["status"] == "IN_PROGRESS" => bail!(
            "{status}: request {id} has already started; add --force to stop it \
             (`pipelet cancel --force {id}`)"
        ),
        _ => return Err(error_of(status, &body)),
    }
    Ok(())
}

pub async fn result(server: ServerArgs, args: ResultArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let model = client.find_model(&args.request).await?;
    let status = client.status(&model, &args.request.id).await?;
    let status = if StatusView::from_body(&status).is_finished() {
        status
    } else {
        follow(&client, &model, &args.request.id).await?
    };
    finish(&client, &model, &args.request.id, &status, args.output).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_use_is_checked_per_pipeline() {
        assert!(check_image_use("m", Pipeline::T2v, false).is_ok());
        assert!(check_image_use("m", Pipeline::I2v, true).is_ok());
        let t2v = check_image_use("wan22-fast-t2v", Pipeline::T2v, true).unwrap_err();
        assert!(t2v.to_string().contains("takes no --image"), "{t2v}");
        let i2v = check_image_use("wan22-fast-i2v", Pipeline::I2v, false).unwrap_err();
        assert!(i2v.to_string().contains("--image FILE"), "{i2v}");
    }
}
