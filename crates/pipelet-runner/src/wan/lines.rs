//! Reading lines with a bound: a child process can never make the worker hold an
//! unbounded line in memory.
//!
//! [`LineReader::next`] is cancel-safe (it may lose the race in a `select!`): a partial
//! line is kept in the reader, not in the future, so no byte is lost when the future is
//! dropped.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read with a bound.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Full(Vec<u8>),
    /// The line was longer than the bound; it was consumed and dropped.
    TooLong,
    Eof,
}

/// Splits a byte stream into `\n`-terminated lines of at most `max` bytes (newline
/// excluded). A longer line is read to its end and discarded, never held whole.
pub struct LineReader<R> {
    reader: R,
    max: usize,
    /// The line read so far.
    line: Vec<u8>,
    /// The current line passed `max`; the rest of it is being skipped.
    too_long: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            line: Vec::new(),
            too_long: false,
        }
    }

    /// The next line. Cancel-safe.
    pub async fn next(&mut self) -> std::io::Result<Line> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                let too_long = std::mem::take(&mut self.too_long);
                let line = std::mem::take(&mut self.line);
                return Ok(match (too_long, line.is_empty()) {
                    (true, _) => Line::TooLong,
                    (false, true) => Line::Eof,
                    // A last line without a newline still counts.
                    (false, false) => Line::Full(line),
                });
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if !self.too_long {
                if self.line.len() + chunk.len() > self.max {
                    self.too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let used = found.unwrap_or(available.len());
            // Everything taken from the buffer is now in `self`: nothing is lost if the
            // caller stops waiting at the next `fill_buf`.
            self.reader.consume(used);
            if found.is_some() {
                let line = std::mem::take(&mut self.line);
                return Ok(if std::mem::take(&mut self.too_long) {
                    Line::TooLong
                } else {
                    Line::Full(line)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn lines_are_bounded_and_long_ones_are_skipped_whole() {
        let long = "x".repeat(100);
        let data = format!("short\n{long}\nnext\nlast");
        // A small buffer makes the long line span several reads.
        let mut r = LineReader::new(BufReader::with_capacity(8, data.as_bytes()), 10);
        let mut lines = Vec::new();
        loop {
            let line = r.next().await.expect("read");
            if line == Line::Eof {
                break;
            }
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                Line::Full(b"short".to_vec()),
                Line::TooLong,
                Line::Full(b"next".to_vec()),
                Line::Full(b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn a_dropped_read_loses_no_bytes() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = LineReader::new(BufReader::new(rx), 1024);
        tx.write_all(b"{\"half\":").await.expect("write");
        // The read takes the half line, then waits for the rest and is dropped.
        let timed_out = tokio::time::timeout(Duration::from_millis(50), r.next()).await;
        assert!(timed_out.is_err());
        tx.write_all(b"1}\nnext\n").await.expect("write");
        assert_eq!(
            r.next().await.expect("read"),
            Line::Full(b"{\"half\":1}".to_vec())
        );
        assert_eq!(r.next().await.expect("read"), Line::Full(b"next".to_vec()));
    }
}
