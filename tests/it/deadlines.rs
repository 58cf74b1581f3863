//! `deadline_ms` on 0x01 over TCP: the answer is written at the deadline
//! without waiting for a running inference, what missed it says so, an
//! overdue image is never inferred, and bad values are refused. A slow
//! worker (`debug.min_inference_ms`) makes the timing a matter of
//! configuration: every image holds the worker for at least that long.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

fn assert_missed(e: &Value) {
    assert!(e["result"].is_null(), "{e}");
    assert_eq!(e["error_code"], 4, "{e}");
    assert_eq!(e["message"], "deadline missed", "{e}");
}

/// Each image holds the worker for 20 s; the answer is due after 300 ms. A
/// server that waited for the inference could not answer within the 10 s
/// this client reads for.
#[test]
fn the_answer_is_written_at_the_deadline_not_after_the_inference() {
    let s = TestServer::start(Options { workers: 1, min_inference_ms: 20_000, metrics: true, ..Options::default() });
    let mut c = s.client();
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = c.request(&classify_with(&["normal_1.jpg", "rot_1.jpg", "missing.jpg"], r#""deadline_ms": 300"#));
    assert_eq!(r["cmd"], 2, "{r}");
    let e = entries(&r);
    assert_eq!(e.len(), 3);
    assert_missed(&e[0]); // running when the deadline came: its result is dropped
    assert_missed(&e[1]); // still queued: never started
    assert_eq!((e[2]["error_code"].as_i64(), e[2]["message"].is_string()), (Some(2), true), "missing says why: {r}");
    let m = scrape(&s);
    assert_eq!(metric(&m, "pear_deadline_misses_total", ""), 2.0);
    assert_eq!(metric(&m, "pear_deadline_lateness_seconds_count", ""), 1.0, "one answer had a deadline");
    assert_eq!(metric(&m, "pear_images_by_error_code_total", "error_code=4"), 2.0);
    // The connection goes on: a management command is answered at once.
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(entries(&c.request(r#"{"cmd": 0x22, "request_data": null}"#))[0]["file_name"], "pear-default.safetensors");
}

/// A's image holds the only worker for 3 s. B's image, due 100 ms after it
/// arrives, is answered "deadline missed" while it waits; when the worker is
/// free it takes B's next image, not the overdue one: two images inferred in
/// all, never three.
#[test]
fn an_overdue_image_is_never_inferred() {
    let s = TestServer::start(Options { workers: 1, min_inference_ms: 3000, metrics: true, ..Options::default() });
    let (mut a, mut b) = (s.client(), s.client());
    a.send(classify(&["normal_1.jpg"]).as_bytes());
    wait_for_metric(&s, "pear_images_in_flight", "", |v| v == 1.0);
    wait_for_metric(&s, "pear_queue_depth", "", |v| v == 0.0); // the worker has A's image
    let r = b.request(&classify_with(&["rot_1.jpg"], r#""deadline_ms": 100"#));
    assert_missed(&entries(&r)[0]);
    let r = b.request(&classify(&["bruise_1.jpg"]));
    assert_eq!(entries(&r)[0]["error_code"], 0, "{r}");
    assert_eq!(entries(&a.recv())[0]["error_code"], 0);
    let m = scrape(&s);
    assert_eq!(metric(&m, "pear_inference_seconds_count", ""), 2.0, "rot_1.jpg was inferred after its deadline");
    assert_eq!(metric(&m, "pear_deadline_misses_total", ""), 1.0);
}

/// A request without a deadline is answered as before, with no message
/// (extended results off); one with a generous deadline gets its results.
#[test]
fn a_deadline_that_is_met_changes_nothing_but_the_messages() {
    let s = TestServer::start(Options { metrics: true, ..Options::default() });
    let mut c = s.client();
    let plain = c.request(&classify(&["rot_1.jpg", "missing.jpg"]));
    let due = c.request(&classify_with(&["rot_1.jpg", "missing.jpg"], r#""deadline_ms": 60000"#));
    assert_eq!(entries(&plain)[0], entries(&due)[0]);
    assert!(entries(&plain)[1].get("message").is_none(), "old clients get the old shape: {plain}");
    assert_eq!(entries(&due)[1]["error_code"], 2);
    assert!(entries(&due)[1]["message"].as_str().is_some_and(|m| !m.is_empty()), "{due}");
    assert!(due.get("fruit").is_none(), "no fruit_id, no fruit: {due}");
    let m = scrape(&s);
    assert_eq!(metric(&m, "pear_deadline_misses_total", ""), 0.0);
    assert_eq!(metric(&m, "pear_deadline_lateness_seconds_count", ""), 1.0);
    assert_eq!(metric(&m, "pear_deadline_lateness_seconds_sum", ""), 0.0, "written before its deadline: no lateness");
}

#[test]
fn bad_deadlines_are_refused() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    for bad in ["0", "-5", "\"100\"", "1.5", "null", "60001"] {
        let r = c.request(&classify_with(&["normal_1.jpg"], &format!(r#""deadline_ms": {bad}"#)));
        let m = assert_error(&r, 1);
        assert!(m.contains("deadline_ms"), "{bad}: {m}");
    }
    let r = c.request(&classify_with(&["normal_1.jpg"], r#""deadline_ms": 0x3e8"#));
    assert_eq!(entries(&r)[0]["error_code"], 0, "hex like cmd: {r}");
}
