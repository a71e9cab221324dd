//! The client verbs for people: `submit` (with a live progress bar, writes the MP4),
//! `status`, `cancel` and `result`, over the public queue API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Largest image `submit --image` reads (the server's own limit is 10 MiB decoded).
const MAX_IMAGE_FILE_BYTES: u64 = 10 * 1024 * 1024;
const POLL_EVERY: Duration = Duration::from_millis(250);

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
    /// Model id, e.g. wan22-fast-t2v or wan22-fast-i2v.
    model: String,
    #[arg(long)]
    prompt: String,
    /// Input image for image-to-video (JPEG, PNG or WebP).
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
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
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

    /// Sends and returns the JSON body, or fails with the server's `detail`.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
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
        if status.is_success() {
            return Ok((status, body));
        }
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("{status}: {detail}")
    }

    fn request_url(&self, model: &str, id: &str) -> String {
        format!("{}/queue/{model}/requests/{id}", self.base)
    }

    /// The model a request was made under: the given one, or the first that knows it.
    async fn find_model(&self, req: &RequestArgs) -> anyhow::Result<String> {
        if let Some(model) = &req.model {
            return Ok(model.clone());
        }
        let (_, models) = self
            .call(self.http.get(format!("{}/models", self.base)))
            .await
            .context("cannot list models to find the request (pass --model)")?;
        let ids: Vec<String> = models["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for model in ids {
            let url = format!("{}/status", self.request_url(&model, &req.id));
            let r = self.http.get(url).bearer_auth(&self.key).send().await?;
            if r.status() == StatusCode::OK {
                return Ok(model);
            }
        }
        bail!("request {} not found under any model for this key", req.id)
    }

    async fn status(&self, model: &str, id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/status", self.request_url(model, id));
        Ok(self.call(self.http.get(url)).await?.1)
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

/// Follows a request to its end with a progress bar: the queue position while queued,
/// then the task progress. Returns the final status.
async fn follow(client: &Client, model: &str, id: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")?
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let status = client.status(model, id).await?;
        match status["status"].as_str().unwrap_or("") {
            "IN_QUEUE" => {
                bar.set_length(0);
                bar.set_message(format!("queued, position {}", status["queue_position"]));
            }
            "IN_PROGRESS" => {
                let detail = status["statusMessages"]["detail_message"]
                    .as_str()
                    .unwrap_or("");
                if let Some((done, total)) = detail
                    .strip_prefix("Progress: ")
                    .and_then(|r| r.split_once(' '))
                    .and_then(|(f, _)| f.split_once('/'))
                    .and_then(|(d, t)| Some((d.parse::<u64>().ok()?, t.parse::<u64>().ok()?)))
                {
                    bar.set_length(total);
                    bar.set_position(done);
                }
                bar.set_message("generating");
            }
            _ => {
                bar.finish_and_clear();
                return Ok(status);
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

pub async fn submit(server: ServerArgs, args: SubmitArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let body = body_of(&args)?;
    let url = format!("{}/queue/{}", client.base, args.model);
    let (_, created) = client.call(client.http.post(url).json(&body)).await?;
    let id = created["request_id"]
        .as_str()
        .context("no request_id in the answer")?
        .to_string();
    eprintln!(
        "request {id} queued at position {}",
        created["queue_position"]
    );
    if args.no_wait {
        println!("{id}");
        return Ok(());
    }
    let status = follow(&client, &args.model, &id).await?;
    finish(&client, &args.model, &id, &status, args.output).await
}

async fn finish(
    client: &Client,
    model: &str,
    id: &str,
    status: &Value,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    match status["status"].as_str().unwrap_or("") {
        "COMPLETED" => {
            let output = output.unwrap_or_else(|| PathBuf::from(format!("{id}.mp4")));
            let size = client.save_result(model, id, &output).await?;
            eprintln!("wrote {} ({size} bytes)", output.display());
            println!("{}", output.display());
            Ok(())
        }
        other => bail!(
            "request {id} ended {other}: {}",
            status["statusMessages"]["detail_message"]
                .as_str()
                .unwrap_or("no details")
        ),
    }
}

pub async fn status(server: ServerArgs, args: RequestArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let model = client.find_model(&args).await?;
    let status = client.status(&model, &args.id).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

pub async fn cancel(server: ServerArgs, args: RequestArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let model = client.find_model(&args).await?;
    let url = format!("{}/cancel", client.request_url(&model, &args.id));
    client.call(client.http.put(url)).await?;
    eprintln!("request {} cancelled", args.id);
    Ok(())
}

pub async fn result(server: ServerArgs, args: ResultArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let model = client.find_model(&args.request).await?;
    let status = client.status(&model, &args.request.id).await?;
    let status = if matches!(status["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")) {
        follow(&client, &model, &args.request.id).await?
    } else {
        status
    };
    finish(&client, &model, &args.request.id, &status, args.output).await
}
