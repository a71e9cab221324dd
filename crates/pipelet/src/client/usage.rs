//! `pipelet usage`: what a key used, per UTC day and model, from `GET /usage` (the key's
//! own) or, with `--all` or `--key-name` and an admin key, `GET /admin/v1/usage`. A
//! table by default; `--json` prints the server's report.

use anyhow::Context;
use pipelet_api::wire::{UsageReport, UsageTotals};

use super::{Client, ServerArgs};

/// The flags of `pipelet usage`.
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// The first day, YYYY-MM-DD (UTC); default: 29 days before --to.
    #[arg(long)]
    from: Option<String>,
    /// The last day, YYYY-MM-DD (UTC), included; default: today. At most 366 days in all.
    #[arg(long)]
    to: Option<String>,
    /// Admin keys: every key's usage, not only this key's.
    #[arg(long)]
    all: bool,
    /// Admin keys: only the usage of keys with this name.
    #[arg(long)]
    key_name: Option<String>,
    /// Print the server's JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

const HEADER: [&str; 8] = [
    "DAY",
    "KEY",
    "MODEL",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "VIDEO_S",
    "RUN_S",
];

/// The report as aligned columns, a totals line last.
fn table(report: &UsageReport) -> String {
    let mut lines: Vec<[String; 8]> = vec![HEADER.map(str::to_string)];
    let numbers = |t: &UsageTotals| {
        [
            t.completed.to_string(),
            t.failed.to_string(),
            t.cancelled.to_string(),
            format!("{:.1}", t.video_seconds),
            format!("{:.1}", t.run_seconds),
        ]
    };
    for row in &report.rows {
        let [c, f, x, v, r] = numbers(&UsageTotals::of(std::slice::from_ref(row)));
        let (d, k, m) = (row.day.clone(), row.key_name.clone(), row.model_id.clone());
        lines.push([d, k, m, c, f, x, v, r]);
    }
    let [c, f, x, v, r] = numbers(&report.totals);
    let span = format!("{}..{}", report.from, report.to);
    lines.push([span, "total".into(), String::new(), c, f, x, v, r]);
    let mut widths = [0usize; 8];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            // Text left-aligned, numbers right-aligned.
            .map(|(i, (cell, w))| match i {
                0..=2 => format!("{cell:<w$}"),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints the usage report of the key (or, for admins, other keys) as a table or JSON.
pub async fn usage(server: ServerArgs, args: UsageArgs) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    let optional = [
        ("from", &args.from),
        ("to", &args.to),
        ("key_name", &args.key_name),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let path = if args.all || args.key_name.is_some() {
        "admin/v1/usage"
    } else {
        "usage"
    };
    let url = format!("{}/{path}", client.base);
    let (_, body) = client.call(client.http.get(url).query(&query)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let report: UsageReport =
        serde_json::from_value(body).context("the server's answer is not a usage report")?;
    if report.rows.is_empty() {
        eprintln!(
            "no finished requests from {} to {} (UTC)",
            report.from, report.to
        );
    }
    print!("{}", table(&report));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelet_api::wire::UsageRow;

    #[test]
    fn the_table_has_a_row_per_day_key_and_model_and_totals() {
        let rows = vec![UsageRow {
            day: "2026-01-02".into(),
            key_name: "acme".into(),
            model_id: "wan22-fast-t2v".into(),
            completed: 12,
            failed: 1,
            cancelled: 0,
            video_seconds: 60.69,
            run_seconds: 18.0,
        }];
        let report = UsageReport {
            from: "2026-01-01".into(),
            to: "2026-01-31".into(),
            totals: UsageTotals::of(&rows),
            rows,
        };
        let text = table(&report);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            [
                "2026-01-02",
                "acme",
                "wan22-fast-t2v",
                "12",
                "1",
                "0",
                "60.7",
                "18.0"
            ]
        );
        assert_eq!(
            lines[2],
            [
                "2026-01-01..2026-01-31",
                "total",
                "12",
                "1",
                "0",
                "60.7",
                "18.0"
            ]
        );
    }
}
