//! Start tags for fair sharing ([`crate::fair`]) in PostgreSQL: computed in the create
//! transaction from the queued rows, under a transaction-level advisory lock per
//! (pipeline, priority) so concurrent creates (other servers' included) of one queue
//! take their tags one after another. Group commit makes the lock one per batch.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::rows::text;
use crate::{NewJob, Result};

/// The advisory lock key of one (pipeline, priority): FNV-1a of its name, stable across
/// servers and versions.
fn lock_key(pipeline: &str, priority: i64) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let name = format!("pipelet.fair:{pipeline}:{priority}");
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The start tag of each of `jobs`, in order (each sees the ones before it), in the
/// caller's transaction; takes the queues' advisory locks until it ends.
pub(super) async fn start_tags(conn: &mut PgConnection, jobs: &[&NewJob]) -> Result<Vec<i64>> {
    // Sorted, so two transactions take their locks in the same order.
    let mut queues: Vec<(&str, i64)> = jobs
        .iter()
        .map(|j| (j.pipeline.as_str(), j.priority))
        .collect();
    queues.sort_unstable();
    queues.dedup();
    let locks: Vec<i64> = queues.iter().map(|&(p, pr)| lock_key(p, pr)).collect();
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) WITH ORDINALITY AS l(k, ord) ORDER BY ord")
        .bind(&locks)
        .execute(&mut *conn)
        .await?;

    let mut triples: Vec<(&str, i64, &str)> = jobs
        .iter()
        .map(|j| (j.pipeline.as_str(), j.priority, j.owner_key_id.as_str()))
        .collect();
    triples.sort_unstable();
    triples.dedup();
    let pipelines: Vec<&str> = triples.iter().map(|t| t.0).collect();
    let priorities: Vec<i64> = triples.iter().map(|t| t.1).collect();
    let owners: Vec<_> = triples.iter().map(|t| text(t.2)).collect();
    let rows = sqlx::query(
        "SELECT n.ord, \
           (SELECT min(q.vstart) FROM jobs q WHERE q.state = 'queued' \
              AND q.pipeline = n.pipeline AND q.priority = n.priority) AS head, \
           (SELECT max(q.vstart) FROM jobs q WHERE q.state = 'queued' \
              AND q.pipeline = n.pipeline AND q.priority = n.priority \
              AND q.owner_key_id = n.owner) AS last, \
           (SELECT k.weight FROM api_keys k WHERE k.id = n.owner) AS weight \
         FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY \
           AS n(pipeline, priority, owner, ord)",
    )
    .bind(&pipelines)
    .bind(&priorities)
    .bind(&owners)
    .fetch_all(&mut *conn)
    .await?;
    let mut heads: HashMap<(&str, i64), Option<i64>> = HashMap::new();
    let mut lasts: HashMap<(&str, i64, &str), Option<i64>> = HashMap::new();
    let mut weights: HashMap<&str, i64> = HashMap::new();
    for row in rows {
        let ord: i64 = row.try_get("ord")?;
        let Some(&(pipeline, priority, owner)) =
            usize::try_from(ord - 1).ok().and_then(|at| triples.get(at))
        else {
            continue;
        };
        heads.insert((pipeline, priority), row.try_get("head")?);
        lasts.insert((pipeline, priority, owner), row.try_get("last")?);
        let weight: Option<i64> = row.try_get("weight")?;
        weights.insert(owner, weight.unwrap_or(crate::fair::DEFAULT_WEIGHT));
    }

    let mut tags = Vec::with_capacity(jobs.len());
    for job in jobs {
        let queue = (job.pipeline.as_str(), job.priority);
        let key = (queue.0, queue.1, job.owner_key_id.as_str());
        let head = heads.get(&queue).copied().flatten();
        let last = lasts.get(&key).copied().flatten();
        let weight = weights
            .get(key.2)
            .copied()
            .unwrap_or(crate::fair::DEFAULT_WEIGHT);
        let tag = crate::fair::start_tag(head, last, weight);
        heads.insert(queue, Some(head.map_or(tag, |h| h.min(tag))));
        lasts.insert(key, Some(last.map_or(tag, |l| l.max(tag))));
        tags.push(tag);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_per_queue() {
        assert_ne!(lock_key("t2v", 0), lock_key("t2v", 1));
        assert_ne!(lock_key("t2v", 0), lock_key("i2v", 0));
        assert_eq!(lock_key("t2v", 0), lock_key("t2v", 0));
    }
}
