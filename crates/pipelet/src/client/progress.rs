//! How `submit` and `result` show a request they follow, on stderr (stdout carries only
//! the result: the MP4's path, or the request id).
//!
//! On a terminal: a spinner with the queue position and start estimate while queued,
//! then a bar from 0/N to N/N with the server's time estimate while running, left at
//! N/N on COMPLETED (the last poll may have seen fewer tasks done).
//!
//! Otherwise (a pipe, a log file, CI): one plain line per change of status, position or
//! progress, with no carriage returns or escape codes, so that a long GPU job shows it
//! is moving instead of looking hung.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::{ChangeKey, StatusView, tasks_text};

/// The display of one followed request.
pub enum Display {
    Terminal(TerminalDisplay),
    Plain(PlainDisplay<Box<dyn Write + Send>>),
}

impl Display {
    /// A bar when both stdout and stderr are terminals, plain lines on stderr otherwise.
    pub fn for_stderr() -> Display {
        if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            Display::Terminal(TerminalDisplay::new())
        } else {
            Display::Plain(PlainDisplay::new(Box::new(std::io::stderr())))
        }
    }

    /// Shows one polled status.
    pub fn update(&mut self, view: &StatusView) {
        match self {
            Display::Terminal(t) => t.update(view),
            Display::Plain(p) => p.update(view),
        }
    }

    /// Shows the final status; COMPLETED fills the bar to N/N first.
    pub fn finish(&mut self, view: &StatusView) {
        match self {
            Display::Terminal(t) => t.finish(view),
            Display::Plain(p) => p.finish(view),
        }
    }
}

/// Which template the bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Spinner,
    Bar,
}

pub struct TerminalDisplay {
    bar: ProgressBar,
    phase: Phase,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; fall back to the default style rather than fail.
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

const SPINNER: &str = "{spinner} {msg} ({elapsed})";
const BAR: &str = "{spinner} [{bar:30}] {pos}/{len} ({percent}%) {elapsed} {msg}";
const DONE: &str = "[{bar:30}] {pos}/{len} {msg}";

impl TerminalDisplay {
    fn new() -> TerminalDisplay {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(style(SPINNER));
        bar.enable_steady_tick(Duration::from_millis(120));
        TerminalDisplay {
            bar,
            phase: Phase::Spinner,
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.phase != phase {
            self.bar.set_style(style(match phase {
                Phase::Spinner => SPINNER,
                Phase::Bar => BAR,
            }));
            self.phase = phase;
        }
    }

    fn update(&mut self, view: &StatusView) {
        match (view.status.as_str(), view.tasks) {
            ("IN_PROGRESS", Some((done, total))) => {
                self.set_phase(Phase::Bar);
                self.bar.set_length(total);
                self.bar.set_position(done);
                self.bar.set_message(view.estimate_text());
            }
            ("IN_PROGRESS", None) => {
                self.set_phase(Phase::Spinner);
                self.bar.set_message("starting");
            }
            ("IN_QUEUE", _) => {
                self.set_phase(Phase::Spinner);
                self.bar
                    .set_message(format!("queued, {}", view.queue_text()));
            }
            _ => self.bar.set_message(view.line()),
        }
    }

    fn finish(&mut self, view: &StatusView) {
        match (view.status.as_str(), self.phase, self.bar.length()) {
            ("COMPLETED", Phase::Bar, Some(total)) => {
                self.bar.set_style(style(DONE));
                self.bar.set_position(total);
                self.bar.finish_with_message(view.line());
            }
            ("COMPLETED", _, _) => {
                self.bar.set_style(style("{msg}"));
                self.bar.finish_with_message(view.line());
            }
            // The error printed after this says how it ended.
            _ => self.bar.finish_and_clear(),
        }
    }
}

/// Plain lines, one per change; generic over the writer so tests can read them.
pub struct PlainDisplay<W: Write> {
    out: W,
    last: Option<ChangeKey>,
    /// The task count of the last running line, to end at N/N.
    tasks: Option<(u64, u64)>,
}

impl<W: Write> PlainDisplay<W> {
    pub fn new(out: W) -> PlainDisplay<W> {
        PlainDisplay {
            out,
            last: None,
            tasks: None,
        }
    }

    fn say(&mut self, line: &str) {
        // A closed stderr must not stop the download of the result.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    pub fn update(&mut self, view: &StatusView) {
        let key = view.change_key();
        if self.last.as_ref() == Some(&key) {
            return;
        }
        self.last = Some(key);
        if view.tasks.is_some() {
            self.tasks = view.tasks;
        }
        self.say(&view.line());
    }

    pub fn finish(&mut self, view: &StatusView) {
        if view.status == "COMPLETED"
            && let Some((done, total)) = self.tasks
            && done < total
        {
            self.say(&format!("IN_PROGRESS {}", tasks_text(total, total)));
        }
        self.last = Some(view.change_key());
        self.say(&view.line());
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn view(body: Value) -> StatusView {
        StatusView::from_body(&body)
    }

    fn running(done: u64, total: u64, estimate: f64) -> StatusView {
        view(json!({
            "status": "IN_PROGRESS",
            "statusMessages": {"detail_message": format!("Progress: {done}/{total} Tasks done")},
            "estimated_total_time_seconds": estimate,
        }))
    }

    #[test]
    fn plain_output_is_one_line_per_change_and_ends_at_n_of_n() {
        let mut display = PlainDisplay::new(Vec::new());
        let queued = view(json!({"status": "IN_QUEUE", "queue_position": 1}));
        display.update(&queued);
        display.update(&queued);
        display.update(&view(json!({"status": "IN_QUEUE", "queue_position": 0})));
        display.update(&running(3, 82, 10.0));
        // Only the estimate moved: no new line.
        display.update(&running(3, 82, 11.0));
        display.update(&running(64, 82, 12.0));
        display.finish(&view(json!({"status": "COMPLETED",
            "statusMessages": {"inference_time_seconds": 12.3}})));
        let text = String::from_utf8(display.into_inner()).expect("utf8");
        assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "IN_QUEUE, position 1",
                "IN_QUEUE, position 0 (next)",
                "IN_PROGRESS 3/82 (4%), about 10.0 s in total",
                "IN_PROGRESS 64/82 (78%), about 12.0 s in total",
                "IN_PROGRESS 82/82 (100%)",
                "COMPLETED in 12.3 s",
            ]
        );
    }

    #[test]
    fn a_failure_is_not_filled_up() {
        let mut display = PlainDisplay::new(Vec::new());
        display.update(&running(3, 10, 1.0));
        display.finish(&view(json!({"status": "FAILED",
            "statusMessages": {"error": "the runner crashed"}})));
        let text = String::from_utf8(display.into_inner()).expect("utf8");
        assert_eq!(
            text,
            "IN_PROGRESS 3/10 (30%), about 1.0 s in total\nFAILED: the runner crashed\n"
        );
    }
}
