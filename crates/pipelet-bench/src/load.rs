//! The load generator: `concurrency` tasks, each with its own keep-alive HTTP/1.1
//! connection (plain hyper, so the client costs as little CPU as possible: it shares the
//! machine's cores with the server).
//!
//! Two phases: [`creates`] fills the queue as fast as it can; [`polls`] then alternates
//! status polls and health checks in short time slices (ABBA order, so drift from other
//! load on the machine hits both alike) and attributes the server's CPU time to each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::stats::{Latencies, Summary, postgres_backends_cpu, process_cpu_time, self_cpu_time};

pub const MODEL: &str = "wan22-fast-t2v";
const CREATE_BODY: &str = r#"{"prompt":"a red fox running through fresh snow at dawn, cinematic","width":832,"height":480}"#;

/// One keep-alive connection to the server.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr, key: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake failed")?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = connection.await;
        });
        Ok(Client {
            sender,
            host: addr.to_string(),
            auth: format!("Bearer {key}"),
        })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        // An empty key: no Authorization header (e.g. a signed link).
        if self.auth != "Bearer " {
            request = request.header(AUTHORIZATION, &self.auth);
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        self.sender
            .ready()
            .await
            .context("the connection to the server closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("request to {path} failed"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the response of {path} failed"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The queue- and worker-API calls that the phases share (the load generator's own
/// create loop stays inline: it times each send).
impl Client {
    /// Sends one request; the answer's body when its status is `want`, else an error
    /// that quotes it.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        want: StatusCode,
    ) -> anyhow::Result<Bytes> {
        let (status, reply) = self.send(method.clone(), path, body).await?;
        if status != want {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(reply)
    }

    /// Creates one request of [`MODEL`] (`query` such as `?fal_webhook=…`, or empty);
    /// returns its id.
    pub async fn create(&mut self, query: &str, body: &'static str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Created {
            request_id: String,
        }
        let reply = self
            .expect(
                Method::POST,
                &format!("/queue/{MODEL}{query}"),
                Some(Bytes::from_static(body.as_bytes())),
                StatusCode::OK,
            )
            .await?;
        let created: Created = serde_json::from_slice(&reply)
            .context("the create response is not the expected JSON")?;
        Ok(created.request_id)
    }

    /// The status JSON of request `id`, read as `T`, and when its answer arrived.
    pub async fn status<T: DeserializeOwned>(&mut self, id: &str) -> anyhow::Result<(T, Instant)> {
        let path = format!("/queue/{MODEL}/requests/{id}/status");
        let reply = self
            .expect(Method::GET, &path, None, StatusCode::OK)
            .await?;
        let at = Instant::now();
        let status = serde_json::from_slice(&reply)
            .context("the status response is not the expected JSON")?;
        Ok((status, at))
    }

    /// One worker-API claim (`request` is its JSON body, serialized once by callers that
    /// claim in a loop): the job, read as `T`, and when the answer arrived; `None` when
    /// the queue stayed empty for the claim's wait (204).
    pub async fn claim<T: DeserializeOwned>(
        &mut self,
        request: Bytes,
    ) -> anyhow::Result<Option<(T, Instant)>> {
        let (status, reply) = self
            .send(Method::POST, "/worker/v1/claim", Some(request))
            .await?;
        let at = Instant::now();
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => Ok(Some((
                serde_json::from_slice(&reply)
                    .context("the claim answer is not the expected JSON")?,
                at,
            ))),
            _ => bail!(
                "claim answered {status}: {}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }

    /// Uploads `result` for leased job `id`, then completes it with `complete` (its JSON
    /// body); returns when the complete call's answer arrived.
    pub async fn finish(
        &mut self,
        id: &str,
        token: i64,
        result: Bytes,
        complete: &serde_json::Value,
    ) -> anyhow::Result<Instant> {
        self.expect(
            Method::PUT,
            &format!("/worker/v1/jobs/{id}/result?lease_token={token}"),
            Some(result),
            StatusCode::OK,
        )
        .await?;
        self.expect(
            Method::POST,
            &format!("/worker/v1/jobs/{id}/complete"),
            Some(Bytes::from(complete.to_string())),
            StatusCode::NO_CONTENT,
        )
        .await?;
        Ok(Instant::now())
    }
}

pub async fn connect_all(
    addr: SocketAddr,
    key: &str,
    concurrency: usize,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(Client::connect(addr, key).await?);
    }
    Ok(clients)
}

/// Whose CPU time a phase is charged with: the server process, this process (the load
/// generator), and, when the server uses PostgreSQL on this machine, the backends of
/// its database (found by their process title, `postgres: … <database> …`).
#[derive(Debug, Clone)]
pub struct CpuProbe {
    pub server_pid: u32,
    pub pg_database: Option<Arc<str>>,
}

impl CpuProbe {
    /// The server and this process only (the SQLite store lives in the server).
    pub fn server(server_pid: u32) -> CpuProbe {
        CpuProbe {
            server_pid,
            pg_database: None,
        }
    }

    pub fn sample(&self) -> CpuSample {
        CpuSample {
            server: process_cpu_time(self.server_pid).unwrap_or_default(),
            client: self_cpu_time(),
            db: self
                .pg_database
                .as_deref()
                .map(postgres_backends_cpu)
                .unwrap_or_default(),
        }
    }
}

/// CPU clocks at one moment; the database's per backend, as backends come and go.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    server: Duration,
    client: Duration,
    db: HashMap<u32, Duration>,
}

/// CPU time spent while a phase ran, in the server process, in this one, and in the
/// PostgreSQL backends serving the server (zero with SQLite).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub server: Duration,
    pub client: Duration,
    pub db: Duration,
}

impl CpuSplit {
    pub fn between(a: &CpuSample, b: &CpuSample) -> CpuSplit {
        // A backend that started during the phase counts from zero; one that ended
        // during it is lost (the pool keeps its connections, so that is rare).
        let db =
            b.db.iter()
                .map(|(pid, t)| t.saturating_sub(a.db.get(pid).copied().unwrap_or_default()))
                .sum();
        CpuSplit {
            server: b.server.saturating_sub(a.server),
            client: b.client.saturating_sub(a.client),
            db,
        }
    }

    fn add(&mut self, other: CpuSplit) {
        self.server += other.server;
        self.client += other.client;
        self.db += other.db;
    }
}

#[derive(Debug, Deserialize)]
struct CreateReply {
    request_id: String,
    queue_position: u64,
}

pub struct CreateReport {
    pub count: u64,
    pub elapsed: Duration,
    pub latency: Summary,
    pub cpu: CpuSplit,
    /// The job that will be dispatched last (the highest queue position).
    pub last_id: String,
    pub last_position: u64,
    /// Whether the positions returned were exactly 0..count-1, each once.
    pub positions_exact: bool,
}

/// Creates `total` jobs from `concurrency` connections, as fast as the server answers.
pub async fn creates(
    addr: SocketAddr,
    key: &str,
    cpu: &CpuProbe,
    concurrency: usize,
    total: u64,
) -> anyhow::Result<CreateReport> {
    let clients = connect_all(addr, key, concurrency).await?;
    let path: Arc<str> = format!("/queue/{MODEL}").into();
    let body = Bytes::from_static(CREATE_BODY.as_bytes());
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu.sample();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for mut client in clients {
        let (path, body, next) = (path.clone(), body.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Latencies::with_capacity((total as usize / concurrency) + 1);
            let mut positions = Vec::new();
            let mut last: Option<(u64, String)> = None;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = Instant::now();
                let (status, reply) = client.send(Method::POST, &path, Some(body.clone())).await?;
                latencies.record(sent.elapsed());
                if status != StatusCode::OK {
                    bail!(
                        "create answered {status}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
                let reply: CreateReply = serde_json::from_slice(&reply)
                    .context("the create response is not the expected JSON")?;
                positions.push(reply.queue_position);
                if last.as_ref().is_none_or(|(p, _)| reply.queue_position > *p) {
                    last = Some((reply.queue_position, reply.request_id));
                }
            }
            anyhow::Ok((latencies, positions, last))
        });
    }
    let mut latencies = Latencies::with_capacity(total as usize);
    let mut seen = vec![false; total as usize];
    let mut positions_exact = true;
    let mut last: Option<(u64, String)> = None;
    while let Some(joined) = tasks.join_next().await {
        let (l, positions, task_last) = joined.context("a create task panicked")??;
        latencies.merge(l);
        for p in positions {
            match seen.get_mut(p as usize) {
                Some(slot) if !*slot => *slot = true,
                _ => positions_exact = false,
            }
        }
        if let Some((p, id)) = task_last
            && last.as_ref().is_none_or(|(lp, _)| p > *lp)
        {
            last = Some((p, id));
        }
    }
    let elapsed = start.elapsed();
    let cpu = CpuSplit::between(&cpu0, &cpu.sample());
    let (last_position, last_id) = last.context("no job was created")?;
    positions_exact &= seen.iter().all(|&s| s);
    Ok(CreateReport {
        count: latencies.len() as u64,
        elapsed,
        latency: latencies.summary(),
        cpu,
        last_id,
        last_position,
        positions_exact,
    })
}

/// The two endpoints compared by [`polls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    Status,
    Health,
}

impl Endpoint {
    fn index(self) -> usize {
        match self {
            Endpoint::Status => 0,
            Endpoint::Health => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PollPlan {
    pub concurrency: usize,
    /// Measured time per endpoint, split into `slice`-long slices.
    pub per_endpoint: Duration,
    pub slice: Duration,
    /// Unrecorded load before the first slice.
    pub warmup: Duration,
    /// Load only this endpoint (to profile it alone); no ratio then.
    pub only: Option<Endpoint>,
}

impl PollPlan {
    /// Status, health, health, status, status, health…: each endpoint gets the same
    /// number of slices, and a linear drift in machine load affects both equally.
    /// With `only`, every slice is that endpoint's.
    fn schedule(&self) -> Vec<Endpoint> {
        let pairs = (self.per_endpoint.as_secs_f64() / self.slice.as_secs_f64())
            .round()
            .max(1.0) as usize;
        if let Some(only) = self.only {
            return vec![only; pairs];
        }
        (0..pairs)
            .flat_map(|k| {
                if k % 2 == 0 {
                    [Endpoint::Status, Endpoint::Health]
                } else {
                    [Endpoint::Health, Endpoint::Status]
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct EndpointReport {
    pub requests: u64,
    pub measured: Duration,
    pub latency: Summary,
    pub cpu: CpuSplit,
}

impl EndpointReport {
    pub fn per_second(&self) -> f64 {
        if self.measured.is_zero() {
            return 0.0;
        }
        self.requests as f64 / self.measured.as_secs_f64()
    }

    pub fn server_cpu_us_per_request(&self) -> f64 {
        self.cpu.server.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    pub fn client_cpu_us_per_request(&self) -> f64 {
        self.cpu.client.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

pub struct PollReport {
    pub status: EndpointReport,
    pub health: EndpointReport,
}

/// Alternates `GET .../status` of `job_id` and `GET /health` per [`PollPlan`], from
/// `concurrency` connections. Every response must be 200.
pub async fn polls(
    addr: SocketAddr,
    key: &str,
    cpu: &CpuProbe,
    job_id: &str,
    plan: &PollPlan,
) -> anyhow::Result<PollReport> {
    let clients = connect_all(addr, key, plan.concurrency).await?;
    let schedule: Arc<[Endpoint]> = plan.schedule().into();
    let paths: Arc<[String; 2]> = Arc::new([
        format!("/queue/{MODEL}/requests/{job_id}/status"),
        "/health".to_string(),
    ]);
    let slice = plan.slice;
    let t0 = Instant::now() + plan.warmup;
    let end = t0 + slice * schedule.len() as u32;

    // CPU samples at every slice boundary, taken by a task of its own.
    let sampler = {
        let n = schedule.len();
        let probe = cpu.clone();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n + 1);
            for i in 0..=n {
                tokio::time::sleep_until((t0 + slice * i as u32).into()).await;
                samples.push(probe.sample());
            }
            samples
        })
    };

    let mut tasks = JoinSet::new();
    for mut client in clients {
        let (schedule, paths) = (schedule.clone(), paths.clone());
        tasks.spawn(async move {
            let mut latencies = [Latencies::default(), Latencies::default()];
            let mut warm = 0usize;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let (endpoint, recorded) = if sent < t0 {
                    warm += 1;
                    let e = if warm.is_multiple_of(2) {
                        Endpoint::Status
                    } else {
                        Endpoint::Health
                    };
                    (e, false)
                } else {
                    let i = ((sent - t0).as_nanos() / slice.as_nanos()) as usize;
                    (schedule[i.min(schedule.len() - 1)], true)
                };
                let path = &paths[endpoint.index()];
                let (status, body) = client.send(Method::GET, path, None).await?;
                let latency = sent.elapsed();
                if status != StatusCode::OK {
                    bail!(
                        "GET {path} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                if recorded {
                    latencies[endpoint.index()].record(latency);
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let mut merged = [Latencies::default(), Latencies::default()];
    while let Some(joined) = tasks.join_next().await {
        let [s, h] = joined.context("a poll task panicked")??;
        merged[0].merge(s);
        merged[1].merge(h);
    }
    let samples = sampler.await.context("the CPU sampler panicked")?;

    let mut cpu = [CpuSplit::default(), CpuSplit::default()];
    for (i, endpoint) in schedule.iter().enumerate() {
        cpu[endpoint.index()].add(CpuSplit::between(&samples[i], &samples[i + 1]));
    }
    let [status_lat, health_lat] = merged;
    let report = |endpoint: Endpoint, lat: Latencies| EndpointReport {
        requests: lat.len() as u64,
        measured: slice * schedule.iter().filter(|&&e| e == endpoint).count() as u32,
        latency: lat.summary(),
        cpu: cpu[endpoint.index()],
    };
    Ok(PollReport {
        status: report(Endpoint::Status, status_lat),
        health: report(Endpoint::Health, health_lat),
    })
}

#[derive(Debug, Deserialize)]
struct StatusReply {
    status: String,
    queue_position: Option<u64>,
}

/// One status poll, returning the job's status and queue position.
pub async fn job_status(
    addr: SocketAddr,
    key: &str,
    job_id: &str,
) -> anyhow::Result<(String, Option<u64>)> {
    let mut client = Client::connect(addr, key).await?;
    let (reply, _): (StatusReply, _) = client.status(job_id).await?;
    Ok((reply.status, reply.queue_position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_abba_and_balanced() {
        let plan = PollPlan {
            concurrency: 1,
            per_endpoint: Duration::from_secs(2),
            slice: Duration::from_millis(500),
            warmup: Duration::ZERO,
            only: None,
        };
        use Endpoint::{Health as H, Status as S};
        assert_eq!(plan.schedule(), vec![S, H, H, S, S, H, H, S]);
        let only = PollPlan {
            only: Some(S),
            ..plan
        };
        assert_eq!(only.schedule(), vec![S; 4]);
    }
}
