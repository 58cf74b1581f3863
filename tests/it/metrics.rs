//! `/metrics`, `/healthz` and `/readyz` on the metrics listener, against the
//! real binary: the exposition parses, and its counters move by exactly the
//! traffic this test sends.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn metrics_count_exactly_the_traffic() {
    let s = TestServer::start(Options { metrics: true, ..Options::default() });
    let before = scrape(&s);
    assert_eq!(metric(&before, "pear_active_model_info", "model=pear-default.safetensors"), 1.0);

    let mut c = s.client();
    let r = c.request(&classify(&["normal_1.jpg", "rot_1.jpg", "missing.jpg"]));
    let classes: Vec<i64> = entries(&r)[..2].iter().map(|e| e["result"].as_i64().unwrap()).collect();
    c.request(r#"{"cmd": 0x22, "request_data": null}"#);
    c.request(r#"{"cmd": 0x22, "request_data": null}"#);
    c.request("nonsense\n");
    c.request(r#"{"cmd": 0x26, "request_data": ["broken.safetensors"]}"#);
    c.request(r#"{"cmd": 0x26, "request_data": ["second.safetensors"]}"#);
    let after = scrape(&s);

    let d = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert_eq!(d("pear_requests_total", "command=0x01,outcome=error"), 1.0, "missing.jpg makes the 0x01 an error");
    assert_eq!(d("pear_requests_total", "command=0x22,outcome=ok"), 2.0);
    assert_eq!(d("pear_requests_total", "command=invalid,outcome=error"), 1.0);
    assert_eq!(d("pear_requests_total", "command=0x26,outcome=error"), 1.0);
    assert_eq!(d("pear_requests_total", "command=0x26,outcome=ok"), 1.0);
    assert_eq!(d("pear_images_by_error_code_total", "error_code=0"), 2.0);
    assert_eq!(d("pear_images_by_error_code_total", "error_code=2"), 1.0);
    let mut by_class = BTreeMap::new();
    for c in classes {
        *by_class.entry(c).or_insert(0.0) += 1.0;
    }
    for (class, n) in by_class {
        assert_eq!(d("pear_images_by_class_total", &format!("class={class}")), n);
    }
    assert_eq!(d("pear_inference_seconds_count", ""), 2.0, "two images were inferred; the missing one never queued");
    assert_eq!(d("pear_queue_wait_seconds_count", ""), 2.0);
    assert_eq!(d("pear_request_seconds_count", "command=0x22"), 2.0);
    assert_eq!(d("pear_model_loads_total", "outcome=error"), 1.0);
    assert_eq!(d("pear_model_loads_total", "outcome=ok"), 1.0);
    assert_eq!(d("pear_connections_accepted_total", ""), 1.0);
    assert_eq!(metric(&after, "pear_connections_open", ""), 1.0);
    assert_eq!(metric(&after, "pear_queue_depth", ""), 0.0);
    assert_eq!(metric(&after, "pear_images_in_flight", ""), 0.0);
    assert_eq!(metric(&after, "pear_busy_workers", ""), 0.0);
    assert_eq!(metric(&after, "pear_active_model_info", "model=second.safetensors"), 1.0);
    assert_eq!(metric(&after, "pear_active_model_info", "model=pear-default.safetensors"), 0.0, "only the active model is listed");
}

#[test]
fn health_and_readiness() {
    let mut s = TestServer::start(Options { metrics: true, workers: 1, min_inference_ms: 1000, ..Options::default() });
    assert_eq!(s.http_get("/healthz").0, 200);
    let (status, body) = s.http_get("/readyz");
    assert_eq!(status, 200);
    assert!(body.contains("pear-default.safetensors"), "{body}");
    assert_eq!(s.http_get("/nope").0, 404);
    // Draining: not ready (a balancer stops sending), still alive.
    let mut c = s.client();
    c.send(classify(&["normal_1.jpg"; 4]).as_bytes());
    assert_eq!(s.client().request(r#"{"cmd": 0x22, "request_data": null}"#)["cmd"], 0x23);
    s.signal(libc::SIGTERM);
    let mut status = 0;
    for _ in 0..100 {
        status = s.http_get("/readyz").0;
        if status == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, 503);
    assert_eq!(s.http_get("/healthz").0, 200);
    assert_eq!(entries(&c.recv()).len(), 4);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
}

/// A browser keeps idle connections open and opens spare ones it never
/// uses: none may hold up another request. (tiny_http, before `http.rs`,
/// queued new connections behind a few idle ones, and the dashboard stalled.)
#[test]
fn idle_connections_do_not_hold_up_the_metrics_listener() {
    let s = TestServer::start(Options { metrics: true, ..Options::default() });
    let addr = s.metrics.unwrap();
    let mut idle: Vec<std::net::TcpStream> = (0..12).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // One more has sent half a request head and stopped.
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut half, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    idle.push(half);
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        assert_eq!(s.http_get(path).0, 200, "{path}");
    }
    drop(idle);
}
