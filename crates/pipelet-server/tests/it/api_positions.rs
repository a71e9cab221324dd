//! Exact `queue_position`s with `workers: 0`: dispatch is by priority (the tier's from
//! the catalog plus the request's, capped by the key), then age, per pipeline; a cancel
//! moves everyone behind it up.

use crate::common::AppExt as _;
use crate::common::{
    I2V, I2V_PRO, I2V_VIP, T2V, T2V_PREMIUM, T2V_PRO, TestApp, spawn_queue_only, str_field,
};
use pipelet_store::Role;
use reqwest::StatusCode;
use serde_json::Value;

/// Every request's current position, in the order given.
async fn positions(app: &TestApp, key: &str, requests: &[&Value]) -> Vec<u64> {
    let mut out = Vec::new();
    for created in requests {
        out.push(app.position(created, key).await);
    }
    out
}

#[tokio::test]
async fn tiers_and_priorities_order_each_pipeline_separately() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await; // may add up to 100

    // (model, request priority) → effective priority; the position each create answers
    // counts the jobs of its pipeline ahead of it at that moment.
    let base = app.create_t2v(&key, T2V, 0).await; // 0
    assert_eq!(base["queue_position"], 0);
    let pro = app.create_t2v(&key, T2V_PRO, 0).await; // 20
    assert_eq!(pro["queue_position"], 0);
    let premium = app.create_t2v(&key, T2V_PREMIUM, 0).await; // 10
    assert_eq!(premium["queue_position"], 1);
    let boosted = app.create_t2v(&key, T2V, 15).await; // 15
    assert_eq!(boosted["queue_position"], 1);
    let base2 = app.create_t2v(&key, T2V, 0).await; // 0, younger than `base`
    assert_eq!(base2["queue_position"], 4);
    let lowered = app.create_t2v(&key, T2V_PREMIUM, -11).await; // -1
    assert_eq!(lowered["queue_position"], 5);
    let tie = app.create_t2v(&key, T2V_PRO, -5).await; // 15, younger than `boosted`
    assert_eq!(tie["queue_position"], 2);

    // The image-to-video queue is separate: it starts at 0 again.
    let i2v = app.create_i2v(&key, I2V, 0).await; // 0
    assert_eq!(i2v["queue_position"], 0);
    let vip = app.create_i2v(&key, I2V_VIP, 0).await; // 20
    assert_eq!(vip["queue_position"], 0);
    let i2v_pro = app.create_i2v(&key, I2V_PRO, 0).await; // 10
    assert_eq!(i2v_pro["queue_position"], 1);
    let i2v_top = app.create_i2v(&key, I2V, 25).await; // 25
    assert_eq!(i2v_top["queue_position"], 0);

    let t2v = [&pro, &boosted, &tie, &premium, &base, &base2, &lowered];
    assert_eq!(positions(&app, &key, &t2v).await, [0, 1, 2, 3, 4, 5, 6]);
    let i2v_all = [&i2v_top, &vip, &i2v_pro, &i2v];
    assert_eq!(positions(&app, &key, &i2v_all).await, [0, 1, 2, 3]);

    // Cancelling one in the middle moves only the ones behind it, in its pipeline.
    let response = app.put(str_field(&boosted, "cancel_url"), &key).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let t2v = [&pro, &tie, &premium, &base, &base2, &lowered];
    assert_eq!(positions(&app, &key, &t2v).await, [0, 1, 2, 3, 4, 5]);
    assert_eq!(positions(&app, &key, &i2v_all).await, [0, 1, 2, 3]);

    // Cancelling the head moves everyone; a new request goes by priority, not arrival.
    let response = app.put(str_field(&pro, "cancel_url"), &key).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let late = app.create_t2v(&key, T2V_PREMIUM, 0).await; // 10, after `premium`
    assert_eq!(late["queue_position"], 2);
    let t2v = [&tie, &premium, &late, &base, &base2, &lowered];
    assert_eq!(positions(&app, &key, &t2v).await, [0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn request_priority_is_capped_by_the_key() {
    let app = spawn_queue_only().await;
    let admin = app.admin_key.clone(); // may add up to 1000
    let capped_at_0 = app.key(Role::Client, 0).await;
    let capped_at_50 = app.key(Role::Client, 50).await;

    // Reference jobs: effective priorities 50, 49, 0 and -1, oldest first.
    let p50 = app.create_t2v(&admin, T2V, 50).await;
    let p49 = app.create_t2v(&admin, T2V, 49).await;
    let p0 = app.create_t2v(&admin, T2V, 0).await;
    let m1 = app.create_t2v(&admin, T2V, -1).await;

    // Asking 500 with a cap of 0 gives exactly 0: behind the older 0, ahead of -1.
    let a = app.create_t2v(&capped_at_0, T2V, 500).await;
    assert_eq!(a["queue_position"], 3, "{a}");
    // Asking 500 with a cap of 50 gives exactly 50: behind the older 50, ahead of 49.
    let b = app.create_t2v(&capped_at_50, T2V, 500).await;
    assert_eq!(b["queue_position"], 1, "{b}");
    // The cap applies to the request's part; the tier's 20 comes on top: 70 leads.
    let c = app.create_t2v(&capped_at_50, T2V_PRO, 500).await;
    assert_eq!(c["queue_position"], 0, "{c}");
    // Lowering one's own priority is always allowed, whatever the cap.
    let d = app.create_t2v(&capped_at_0, T2V, -1).await;
    assert_eq!(d["queue_position"], 7, "{d}");

    // Each create answer says the priority the request got: capped, but not silently.
    for (created, want) in [(&p50, 50), (&m1, -1), (&a, 0), (&b, 50), (&c, 50), (&d, -1)] {
        assert_eq!(created["priority"], want, "{created}");
    }

    let order = [&c, &p50, &b, &p49, &p0, &a, &m1, &d];
    assert_eq!(
        positions(&app, &admin, &order).await,
        [0, 1, 2, 3, 4, 5, 6, 7]
    );
}

/// Fair sharing at equal priority: one key's burst does not hold back another key's
/// request (it goes right behind the burst's head), and positions stay exact: the
/// burst's requests behind it move back by one.
#[tokio::test]
async fn a_burst_from_one_key_does_not_hold_back_another() {
    let app = spawn_queue_only().await;
    let a = app.client_key().await;
    let b = app.client_key().await;
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.push(app.create_t2v(&a, T2V, 0).await);
    }
    assert_eq!(burst[19]["queue_position"], 19);
    let single = app.create_t2v(&b, T2V, 0).await;
    assert_eq!(single["queue_position"], 1);
    assert_eq!(app.position(&burst[0], &a).await, 0);
    assert_eq!(app.position(&burst[1], &a).await, 2);
    assert_eq!(app.position(&burst[19], &a).await, 20);
}
