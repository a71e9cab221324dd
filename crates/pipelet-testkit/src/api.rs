//! One key's view of a server's public API over HTTP, and Prometheus text sums.

use std::time::Duration;

use serde_json::Value;

/// One key's view of one server's public API; every call returns the HTTP status and
/// the JSON body (`Value::Null` for an empty one).
#[derive(Clone)]
pub struct Api {
    /// The server's root URL, without a trailing slash (`http://127.0.0.1:PORT`).
    pub base: String,
    /// The API key sent as `Authorization: Bearer`.
    pub key: String,
    /// The client every call uses (120 s timeout), for tests' own requests.
    pub http: reqwest::Client,
}

impl Api {
    /// `key`'s view of the server at `base` (no trailing slash).
    pub fn new(base: &str, key: &str) -> Api {
        Api {
            base: base.to_string(),
            key: key.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
        let r = r.send().await.expect("request");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        (status, json)
    }

    /// `POST /queue/{model}` with `body`, whatever the answer.
    pub async fn try_create(&self, model: &str, body: &Value) -> (u16, Value) {
        Self::answer(
            self.http
                .post(format!("{}/queue/{model}", self.base))
                .bearer_auth(&self.key)
                .json(body),
        )
        .await
    }

    /// Creates a request (asserting 200); returns its id and the create answer.
    pub async fn create(&self, model: &str, body: &Value) -> (String, Value) {
        let (status, answer) = self.try_create(model, body).await;
        assert_eq!(status, 200, "create on {}: {answer}", self.base);
        let id = answer["request_id"]
            .as_str()
            .expect("request_id")
            .to_string();
        (id, answer)
    }

    /// The status body of `id` (asserting 200).
    pub async fn status(&self, model: &str, id: &str) -> Value {
        let (status, body) = Self::answer(
            self.http
                .get(format!("{}/queue/{model}/requests/{id}/status", self.base))
                .bearer_auth(&self.key),
        )
        .await;
        assert_eq!(status, 200, "status of {id} on {}: {body}", self.base);
        body
    }

    /// `PUT …/cancel` of `id`, whatever the answer.
    pub async fn cancel(&self, model: &str, id: &str) -> (u16, Value) {
        Self::answer(
            self.http
                .put(format!("{}/queue/{model}/requests/{id}/cancel", self.base))
                .bearer_auth(&self.key),
        )
        .await
    }

    /// `GET …/requests/{id}`: the result once `COMPLETED`, else the error answer.
    pub async fn result(&self, model: &str, id: &str) -> (u16, Value) {
        Self::answer(
            self.http
                .get(format!("{}/queue/{model}/requests/{id}", self.base))
                .bearer_auth(&self.key),
        )
        .await
    }

    /// GET without a key (`/metrics`, `/ready`, `/health`).
    pub async fn get_open(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// Polls until the status is `want`, panicking after `deadline`.
    pub async fn wait_for(&self, model: &str, id: &str, want: &str, deadline: Duration) -> Value {
        let start = std::time::Instant::now();
        loop {
            let status = self.status(model, id).await;
            if status["status"] == want {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "{id} did not reach {want} within {deadline:?} (asked {}): {status}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The sum of every sample of `metric` in Prometheus text whose labels contain all of
/// `labels` (e.g. `state="completed"`).
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_sum_adds_the_matching_samples() {
        let text = "# HELP jobs Jobs\n\
                    jobs{state=\"completed\",model=\"a\"} 2\n\
                    jobs{state=\"completed\",model=\"b\"} 3\n\
                    jobs{state=\"failed\"} 7\n\
                    jobs_total 100\n";
        assert_eq!(
            super::metric_sum(text, "jobs", &["state=\"completed\""]),
            5.0
        );
        assert_eq!(super::metric_sum(text, "jobs", &[]), 12.0);
    }
}
