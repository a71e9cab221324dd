use serde_json::json;

use super::*;

const URL: &str = "http://h/queue/wan22-fast-i2v/requests/r1";

#[test]
fn create_response_shape() {
    let r = CreateResponse {
        request_id: "r1".into(),
        response_url: URL.into(),
        status_url: format!("{URL}/status"),
        cancel_url: format!("{URL}/cancel"),
        queue_position: 0,
        priority: -3,
    };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({
            "request_id": "r1",
            "response_url": URL,
            "status_url": format!("{URL}/status"),
            "cancel_url": format!("{URL}/cancel"),
            "queue_position": 0,
            "priority": -3
        })
    );
    // Answers from servers older than the field still parse.
    let mut old = serde_json::to_value(&r).unwrap();
    old.as_object_mut().unwrap().remove("priority");
    let parsed: CreateResponse = serde_json::from_value(old).unwrap();
    assert_eq!(parsed.priority, 0);
}

#[test]
fn statuses_serialize_screaming() {
    for st in JobStatus::ALL {
        assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        assert_eq!(JobStatus::parse(st.as_str()), Some(st));
        let back: JobStatus = serde_json::from_value(json!(st.as_str())).unwrap();
        assert_eq!(back, st);
    }
    assert_eq!(JobStatus::parse("in_queue"), None);
    assert!(!JobStatus::InQueue.is_terminal() && !JobStatus::InProgress.is_terminal());
    assert!(JobStatus::Completed.is_terminal() && JobStatus::Cancelled.is_terminal());
}

#[test]
fn queued_status_matches_the_contract() {
    let s = StatusResponse::new(JobStatus::InQueue, "r1", URL, Some(1));
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({
            "status": "IN_QUEUE",
            "queue_position": 1,
            "statusMessages": {},
            "response_url": URL,
            "request_id": "r1",
            "logs": null
        })
    );
}

#[test]
fn in_progress_status_matches_the_contract() {
    let s = StatusResponse::new(JobStatus::InProgress, "r1", URL, Some(3))
        .with_messages(StatusMessages::processing(4, 24))
        .with_progress(4.0 / 24.0)
        .with_estimate(90.0);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["status"], "IN_PROGRESS");
    assert!(
        v.get("queue_position").is_none(),
        "only IN_QUEUE has a position"
    );
    assert_eq!(
        v["statusMessages"],
        json!({"message": "PROCESSING", "detail_message": "Progress: 4/24 Tasks done",
               "estimated_total_time_seconds": 90.0})
    );
    assert_eq!(v["estimated_total_time_seconds"], 90.0);
    assert!((v["progress"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9);
    assert!(v["logs"].is_null());
    assert!(
        v.get("estimated_start_seconds").is_none(),
        "only IN_QUEUE has a start estimate"
    );
}

#[test]
fn queued_status_always_has_a_start_estimate_or_null() {
    let queued = StatusResponse::new(JobStatus::InQueue, "r", URL, Some(2));
    let v = serde_json::to_value(queued.clone().with_start_estimate(Some(12.5))).unwrap();
    assert_eq!(v["estimated_start_seconds"], 12.5);
    let v = serde_json::to_value(queued.clone().with_start_estimate(None)).unwrap();
    assert!(
        v.get("estimated_start_seconds")
            .is_some_and(|e| e.is_null()),
        "no worker: present and null: {v}"
    );
    let back: StatusResponse = serde_json::from_value(v).unwrap();
    assert_eq!(back.estimated_start_seconds, Some(None));
    let v = serde_json::to_value(queued.with_start_estimate(Some(f64::NAN))).unwrap();
    assert!(v["estimated_start_seconds"].is_null(), "{v}");
    let running =
        StatusResponse::new(JobStatus::InProgress, "r", URL, None).with_start_estimate(Some(3.0));
    assert_eq!(running.estimated_start_seconds, None);
}

#[test]
fn progress_is_clamped_and_nan_dropped() {
    let s = StatusResponse::new(JobStatus::InProgress, "r", URL, None);
    assert_eq!(s.clone().with_progress(1.5).progress, Some(1.0));
    assert_eq!(s.clone().with_progress(-0.1).progress, Some(0.0));
    assert_eq!(s.clone().with_progress(f64::NAN).progress, None);
    assert_eq!(
        s.with_estimate(f64::INFINITY).estimated_total_time_seconds,
        None
    );
}

#[test]
fn terminal_status_messages() {
    let failed = StatusResponse::new(JobStatus::Failed, "r", URL, None)
        .with_messages(StatusMessages::failed("worker lost 3 times"));
    let v = serde_json::to_value(&failed).unwrap();
    assert_eq!(v["statusMessages"]["error"], "worker lost 3 times");
    assert_eq!(v["statusMessages"]["message"], "FAILED");

    let c =
        serde_json::to_value(StatusMessages::cancelled("alice", "2025-01-01T00:00:00Z")).unwrap();
    assert_eq!(c["cancelled_by"], "alice");
    assert!(c["detail_message"].as_str().unwrap().contains("alice"));

    let done = serde_json::to_value(StatusMessages::completed(1.5, 90.25, "preview")).unwrap();
    assert_eq!(done["inference_time_seconds"], 90.25);
    assert_eq!(done["backend"], "preview");
    assert!(StatusMessages::default().is_empty());
}

#[test]
fn status_deserializes_with_logs() {
    let v = json!({
        "status": "COMPLETED", "statusMessages": {}, "response_url": URL, "request_id": "r",
        "logs": [{"message": "hi", "level": "INFO", "timestamp": "2025-01-01T00:00:00Z"}]
    });
    let s: StatusResponse = serde_json::from_value(v).unwrap();
    assert_eq!(s.status, JobStatus::Completed);
    assert_eq!(s.logs.unwrap()[0].message, "hi");
}

fn result() -> ResultResponse {
    ResultResponse {
        video: VideoResult {
            data_uri: "AAAA".into(),
            content_type: VIDEO_CONTENT_TYPE.into(),
            file_name: "r1 \"x\".mp4".into(),
            file_size: 3,
            width: 832,
            height: 480,
            fps: 16,
            num_frames: 81,
            duration: 5.0625,
            backend: "preview".into(),
            url: Some("https://v.example.com/files/r1.mp4?expires=1&sig=x".into()),
        },
    }
}

#[test]
fn result_shape_has_plain_base64() {
    let v = serde_json::to_value(result()).unwrap();
    assert_eq!(v["video"]["data_uri"], "AAAA");
    assert_eq!(v["video"]["content_type"], "video/mp4");
    assert_eq!(v["video"]["num_frames"], 81);
}

#[test]
fn stream_parts_rebuild_the_same_document() {
    let r = result();
    let (prefix, suffix) = r.stream_parts();
    assert!(prefix.ends_with("\"data_uri\":\""), "{prefix}");
    let streamed = format!("{prefix}{}{suffix}", r.video.data_uri);
    assert_eq!(streamed, serde_json::to_string(&r).unwrap());
    let back: ResultResponse = serde_json::from_str(&streamed).unwrap();
    assert_eq!(back, r);
}

#[test]
fn error_body_shape() {
    use crate::ErrorCode;
    assert_eq!(
        serde_json::to_value(ErrorBody::new(ErrorCode::NotFound, "nope")).unwrap(),
        json!({"detail": "nope", "code": "not_found"})
    );
    let e: ErrorBody = crate::spec::InputError::field("width", "width bad").into();
    assert_eq!(
        serde_json::to_value(e).unwrap(),
        json!({"detail": "width bad", "code": "invalid_field", "field": "width"})
    );
    let s = ErrorBody::new(ErrorCode::NotCompleted, "not ready").with_status(JobStatus::InProgress);
    assert_eq!(
        serde_json::to_value(s).unwrap(),
        json!({"detail": "not ready", "code": "not_completed", "status": "IN_PROGRESS"})
    );
}
