//! Reads a request's status body into the few facts the CLI shows, and words them as
//! one line a person reads: `IN_QUEUE, position 3`, `IN_PROGRESS 40/82 (49%), about
//! 1.9 s in total`, `COMPLETED in 12.3 s`, `FAILED: <reason>`.
//!
//! Every field is optional here: the CLI may talk to an older or newer server, and a
//! missing field only shortens the line.

use serde_json::Value;

/// Longest reason or detail shown on one line (a server keeps up to 2000 characters).
const MAX_TEXT_CHARS: usize = 300;

/// Status, queue position, tasks and the stopping flag: what a plain line is new on.
pub type ChangeKey = (String, Option<u64>, Option<(u64, u64)>, bool);

/// What the CLI shows of one status body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusView {
    /// `IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`, `FAILED` or `CANCELLED`.
    pub status: String,
    /// Jobs dispatched before this one (0: next), while queued.
    pub position: Option<u64>,
    /// Tasks done out of the total, while running.
    pub tasks: Option<(u64, u64)>,
    /// The server's estimate of the whole run, in seconds.
    pub total_estimate_s: Option<f64>,
    /// The server's estimate of the wait until the run starts, in seconds.
    pub start_estimate_s: Option<f64>,
    /// How long the finished run took, in seconds.
    pub inference_s: Option<f64>,
    /// Set when a forced cancel is pending on a running job.
    pub stopping: bool,
    /// Why a queued job is waiting again (`RETRYING`), or why it failed / who cancelled.
    pub reason: Option<String>,
}

/// A finite, non-negative number of seconds, or nothing.
fn seconds_field(v: &Value) -> Option<f64> {
    v.as_f64().filter(|s| s.is_finite() && *s >= 0.0)
}

/// `d/t` from a detail message such as `Progress: 4/24 Tasks done`: the first word that
/// is two integers around a slash, with `t` > 0 and `d` <= `t`.
fn tasks_in(text: &str) -> Option<(u64, u64)> {
    text.split_whitespace().find_map(|word| {
        let (d, t) = word.split_once('/')?;
        let (d, t) = (d.parse::<u64>().ok()?, t.parse::<u64>().ok()?);
        (t > 0 && d <= t).then_some((d, t))
    })
}

fn short(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_TEXT_CHARS).collect();
    if text.chars().count() > MAX_TEXT_CHARS {
        out.push('…');
    }
    // One line: a reason with newlines would break the plain output.
    out.replace(['\r', '\n'], " ")
}

impl StatusView {
    pub fn from_body(body: &Value) -> StatusView {
        let messages = &body["statusMessages"];
        // An estimate may come at the top level or inside `statusMessages`.
        let either =
            |name: &str| seconds_field(&body[name]).or_else(|| seconds_field(&messages[name]));
        let text = |name: &str| messages[name].as_str().filter(|s| !s.trim().is_empty());
        let status = body["status"].as_str().unwrap_or("UNKNOWN").to_string();
        let detail = text("detail_message");
        let tasks = detail.and_then(tasks_in).or_else(|| {
            // No task count in words: fall back to the fraction, as percent.
            let fraction = body["progress"]
                .as_f64()
                .filter(|f| (0.0..=1.0).contains(f))?;
            Some(((fraction * 100.0).round() as u64, 100))
        });
        let reason = match status.as_str() {
            "IN_QUEUE" if text("message") == Some("RETRYING") => detail,
            "FAILED" => text("error").or(detail),
            "CANCELLED" => detail,
            _ => None,
        };
        StatusView {
            position: body["queue_position"].as_u64(),
            tasks: tasks.filter(|_| status == "IN_PROGRESS"),
            total_estimate_s: either("estimated_total_time_seconds"),
            start_estimate_s: either("estimated_start_seconds"),
            inference_s: seconds_field(&messages["inference_time_seconds"]),
            // `statusMessages.cancel_requested`; servers before it said so in the detail.
            stopping: status == "IN_PROGRESS"
                && (messages["cancel_requested"].as_bool() == Some(true)
                    || detail.is_some_and(|d| d.contains("cancel requested"))),
            reason: reason.map(short),
            status,
        }
    }

    /// Whether the request has ended (no more polling).
    pub fn is_finished(&self) -> bool {
        !matches!(self.status.as_str(), "IN_QUEUE" | "IN_PROGRESS")
    }

    /// What changed-or-not is judged on for plain output: not the estimates, which
    /// move on every poll.
    pub fn change_key(&self) -> ChangeKey {
        (
            self.status.clone(),
            self.position,
            self.tasks,
            self.stopping,
        )
    }

    /// The queue part: `position 3, starts in about 20.0 s`.
    pub fn queue_text(&self) -> String {
        let mut line = match self.position {
            Some(0) => "position 0 (next)".to_string(),
            Some(p) => format!("position {p}"),
            None => "waiting".to_string(),
        };
        if let Some(s) = self.start_estimate_s {
            line.push_str(&format!(", starts in about {}", seconds(s)));
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(", retrying after: {reason}"));
        }
        line
    }

    /// The run-time part: `about 1.9 s in total` (empty without an estimate).
    pub fn estimate_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.total_estimate_s {
            parts.push(format!("about {} in total", seconds(s)));
        }
        if self.stopping {
            parts.push("stopping (cancel requested)".to_string());
        }
        parts.join(", ")
    }

    /// The one-line summary.
    pub fn line(&self) -> String {
        match self.status.as_str() {
            "IN_QUEUE" => format!("IN_QUEUE, {}", self.queue_text()),
            "IN_PROGRESS" => {
                let mut line = match self.tasks {
                    Some((done, total)) => format!("IN_PROGRESS {}", tasks_text(done, total)),
                    None => "IN_PROGRESS, starting".to_string(),
                };
                let estimate = self.estimate_text();
                if !estimate.is_empty() {
                    line.push_str(", ");
                    line.push_str(&estimate);
                }
                line
            }
            "COMPLETED" => match self.inference_s {
                Some(s) => format!("COMPLETED in {}", seconds(s)),
                None => "COMPLETED".to_string(),
            },
            "FAILED" => format!(
                "FAILED: {}",
                self.reason.as_deref().unwrap_or("no reason given")
            ),
            other => match &self.reason {
                Some(reason) => format!("{other}: {reason}"),
                None => other.to_string(),
            },
        }
    }
}

/// `40/82 (49%)`.
pub fn tasks_text(done: u64, total: u64) -> String {
    let percent = (done.saturating_mul(100) + total / 2) / total.max(1);
    format!("{done}/{total} ({percent}%)")
}

/// `1.9 s`, `3 min 5 s`, `1 h 2 min`.
pub fn seconds(s: f64) -> String {
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let whole = s.round() as u64;
    if whole < 3600 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} h {} min", whole / 3600, (whole % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn line(body: Value) -> String {
        StatusView::from_body(&body).line()
    }

    #[test]
    fn queued_with_and_without_a_start_estimate() {
        assert_eq!(
            line(json!({"status": "IN_QUEUE", "queue_position": 3})),
            "IN_QUEUE, position 3"
        );
        assert_eq!(
            line(json!({"status": "IN_QUEUE", "queue_position": 0, "estimated_start_seconds": 20})),
            "IN_QUEUE, position 0 (next), starts in about 20.0 s"
        );
        assert_eq!(
            line(json!({"status": "IN_QUEUE", "queue_position": 1,
                "statusMessages": {"message": "RETRYING", "detail_message": "worker lost"}})),
            "IN_QUEUE, position 1, retrying after: worker lost"
        );
    }

    #[test]
    fn running_shows_tasks_percent_and_the_estimate() {
        let body = json!({
            "status": "IN_PROGRESS",
            "statusMessages": {"message": "PROCESSING", "detail_message": "Progress: 40/82 Tasks done"},
            "progress": 0.487,
            "estimated_total_time_seconds": 1.94,
        });
        assert_eq!(line(body), "IN_PROGRESS 40/82 (49%), about 1.9 s in total");
        let nested = json!({
            "status": "IN_PROGRESS",
            "statusMessages": {"detail_message": "Progress: 1/4 Tasks done (stopping: cancel requested)",
                "estimated_total_time_seconds": 125.0},
        });
        assert_eq!(
            line(nested),
            "IN_PROGRESS 1/4 (25%), about 2 min 5 s in total, stopping (cancel requested)"
        );
        let flagged = json!({
            "status": "IN_PROGRESS",
            "statusMessages": {"detail_message": "Progress: 0/6 Tasks done",
                "cancel_requested": true, "estimated_total_time_seconds": 125.0},
        });
        assert_eq!(
            line(flagged),
            "IN_PROGRESS 0/6 (0%), about 2 min 5 s in total, stopping (cancel requested)"
        );
        let starting = json!({"status": "IN_PROGRESS",
            "statusMessages": {"message": "PROCESSING", "detail_message": "Starting"}});
        assert_eq!(line(starting), "IN_PROGRESS, starting");
        let fraction_only = json!({"status": "IN_PROGRESS", "progress": 0.5});
        assert_eq!(line(fraction_only), "IN_PROGRESS 50/100 (50%)");
    }

    #[test]
    fn finished_states() {
        assert_eq!(
            line(
                json!({"status": "COMPLETED", "statusMessages": {"inference_time_seconds": 12.34}})
            ),
            "COMPLETED in 12.3 s"
        );
        assert_eq!(
            line(
                json!({"status": "FAILED", "statusMessages": {"error": "out of memory\nat step 3"}})
            ),
            "FAILED: out of memory at step 3"
        );
        assert_eq!(line(json!({"status": "FAILED"})), "FAILED: no reason given");
        assert_eq!(
            line(
                json!({"status": "CANCELLED", "statusMessages": {"detail_message": "Cancelled by admin"}})
            ),
            "CANCELLED: Cancelled by admin"
        );
    }

    #[test]
    fn nonsense_numbers_are_ignored() {
        let view = StatusView::from_body(&json!({"status": "IN_PROGRESS",
            "statusMessages": {"detail_message": "Progress: 9/4 Tasks done"},
            "estimated_total_time_seconds": -1.0}));
        assert_eq!(view.tasks, None);
        assert_eq!(view.total_estimate_s, None);
        assert!(!view.is_finished());
    }
}
