//! `pipelet list`: the key's recent requests from `GET /requests`, one line each
//! (id, model, status, created), newest first; `--json` prints the server's page.

use anyhow::Context;
use serde_json::Value;

use super::{Client, ServerArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only requests of this model id, e.g. wan22-fast-t2v.
    #[arg(long)]
    model: Option<String>,
    /// Only requests in this status: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED or
    /// CANCELLED.
    #[arg(long)]
    status: Option<String>,
    /// How many requests to show, 1 to 100.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Continue after an earlier page: the cursor it printed (or its `next_cursor`).
    #[arg(long)]
    cursor: Option<String>,
    /// Admin keys: only requests made with keys of this name.
    #[arg(long)]
    key_name: Option<String>,
    /// Print the server's JSON page instead of one line per request.
    #[arg(long)]
    json: bool,
}

/// `id  model  status  created`, the columns aligned for the usual ids and models.
fn line(request: &Value) -> String {
    let field = |name: &str| request[name].as_str().unwrap_or("-");
    format!(
        "{}  {:<24}  {:<11}  {}",
        field("request_id"),
        field("model_id"),
        field("status"),
        field("created_at")
    )
}

pub async fn list(server: ServerArgs, args: ListArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    let optional = [
        ("model_id", &args.model),
        ("status", &args.status),
        ("cursor", &args.cursor),
        ("key_name", &args.key_name),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let url = format!("{}/requests", client.base);
    let (_, page) = client.call(client.http.get(url).query(&query)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    let requests = page["requests"]
        .as_array()
        .context("the server's answer has no requests list")?;
    if requests.is_empty() {
        eprintln!("no requests");
    }
    for request in requests {
        println!("{}", line(request));
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("more requests: add --cursor {cursor} for the next page");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_id_model_status_and_created() {
        let request = serde_json::json!({
            "request_id": "9b2f5d1e-3c4a-4e8b-a1f0-5d6c7b8a9e01",
            "model_id": "wan22-fast-t2v",
            "status": "IN_QUEUE",
            "created_at": "2026-01-01T12:00:00.000Z",
        });
        let line = line(&request);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "9b2f5d1e-3c4a-4e8b-a1f0-5d6c7b8a9e01",
                "wan22-fast-t2v",
                "IN_QUEUE",
                "2026-01-01T12:00:00.000Z"
            ]
        );
    }
}
