//! Every command's response shape and codes, against the real binary over TCP,
//! plus the concurrency guarantees: cheap commands never wait for inference on
//! another connection, 0x03 cancels queued images, downloads are all-or-nothing.

use crate::common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;

fn one(v: &Value) -> &Value {
    let e = entries(v);
    assert_eq!(e.len(), 1, "{v}");
    &e[0]
}

#[test]
fn classify_answers_every_file_in_order() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let r = c.request(r#"{"cmd": 0x01, "request_data": ["normal_1.jpg", "missing.jpg", "no_pear_1.jpg", "NORMAL_2.JPG"]}"#);
    assert_eq!(r["cmd"], 0x02);
    assert!(r["request_data"].is_null());
    assert_entry_keys(&r);
    let e = entries(&r);
    assert_eq!(e.len(), 4);
    assert_eq!(e[0]["file_name"], "normal_1.jpg");
    assert!(e[0]["result"].is_i64() && e[0]["error_code"] == 0, "{r}");
    assert_eq!(e[1]["error_code"], 2);
    assert!(e[1]["result"].is_null());
    assert_eq!(e[2]["error_code"], 0);
    assert!(e[2]["result"].is_i64(), "no pear still answers an integer (0), like the original: {r}");
    assert_eq!(e[3]["error_code"], 2, "names are case-sensitive on the detection host");
    assert!(e[0].get("label").is_none(), "extended fields are off by default");
}

#[test]
fn extended_results_tell_no_pear_apart() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let mut c = s.client();
    let r = c.request(r#"{"cmd": 0x01, "request_data": ["no_pear_1.jpg", "normal_1.jpg", "missing.jpg"]}"#);
    let e = entries(&r);
    assert_eq!(e[0]["detected"], false, "{r}");
    assert_eq!(e[0]["result"], 0);
    assert!(e[0]["bbox"].is_null());
    assert_eq!(e[1]["detected"], true, "{r}");
    assert!(e[1]["label"].is_string() && e[1]["confidence"].is_f64());
    assert_eq!(e[1]["bbox"].as_array().unwrap().len(), 4);
    assert!(e[2]["message"].as_str().unwrap().contains("not found"), "{r}");
}

#[test]
fn stop_with_nothing_queued() {
    let s = TestServer::start(Options::default());
    let r = s.client().request(r#"{"cmd": 0x03, "request_data": null}"#);
    assert_eq!(r["cmd"], 0x04);
    assert_entry_keys(&r);
    assert_eq!(one(&r)["result"], 2);
    assert_eq!(one(&r)["error_code"], 0);
}

/// The 0x03 arrives in the same write as the 0x01 and every image takes at
/// least 1 s (debug.min_inference_ms): at most the one image already running
/// can finish, the rest are cancelled.
#[test]
fn stop_cancels_queued_images() {
    let s = TestServer::start(Options { workers: 1, min_inference_ms: 1000, ..Options::default() });
    let mut c = s.client();
    let files = ["normal_1.jpg"; 10];
    c.send(format!("{}{}", classify(&files), r#"{"cmd": 0x03, "request_data": null}"#).as_bytes());
    let batch = c.recv();
    assert_eq!(batch["cmd"], 0x02, "the interrupted 0x01 is answered first");
    let e = entries(&batch);
    assert_eq!(e.len(), 10);
    let done = e.iter().filter(|x| x["error_code"] == 0).count();
    let cancelled = e.iter().filter(|x| x["error_code"] == 4 && x["result"].is_null()).count();
    assert_eq!(done + cancelled, 10, "{batch}");
    assert!(done <= 1, "only a running image can finish: {batch}");
    // cancelled images are the queued tail, never the middle
    assert!(e[..done].iter().all(|x| x["error_code"] == 0));
    let stop = c.recv();
    assert_eq!(stop["cmd"], 0x04);
    assert_eq!(one(&stop)["result"], 2);
    // and the connection is usable afterwards
    let again = c.request(&classify(&["normal_1.jpg"]));
    assert_eq!(entries(&again)[0]["error_code"], 0);
}

/// While another connection's batch is inferred (each image at least 500 ms),
/// 0x22/0x24/0x32 are answered; the batch is provably still running after
/// them, since a 0x03 then still finds queued images to cancel.
#[test]
fn cheap_commands_do_not_wait_for_inference() {
    let s = TestServer::start(Options { workers: 1, min_inference_ms: 500, ..Options::default() });
    let mut busy = s.client();
    busy.send(classify(&["normal_1.jpg"; 20]).as_bytes());
    let mut other = s.client();
    for q in [r#"{"cmd": 0x22, "request_data": null}"#, r#"{"cmd": 0x24, "request_data": null}"#, r#"{"cmd": 0x32, "request_data": null}"#]
    {
        assert!(!other.request(q)["cmd"].is_null());
    }
    busy.send(br#"{"cmd": 0x03, "request_data": null}"#);
    let batch = busy.recv();
    let cancelled = entries(&batch).iter().filter(|x| x["error_code"] == 4).count();
    assert!(cancelled > 0, "the cheap commands were answered before the batch ended: {batch}");
}

/// One image running for at least 1 s and a queue of 8: a fills it; b,
/// arriving at a full queue, gets the one place every connection is
/// guaranteed and its other 7 images are refused at once.
#[test]
fn queue_full_answers_at_once() {
    let s = TestServer::start(Options {
        workers: 1,
        queue_capacity: 8,
        min_inference_ms: 1000,
        extended: true,
        metrics: true,
        ..Options::default()
    });
    let mut c = s.client();
    let r = c.request(&classify(&["a.jpg"; 9]));
    assert!(assert_error(&r, 1).contains("at most 8"));
    let mut a = s.client();
    let mut b = s.client();
    a.send(format!("{}{}", classify(&["normal_1.jpg"; 8]), r#"{"cmd": 0x22, "request_data": null}"#).as_bytes());
    // b only once a's images are in: the 0x22 pipelined behind them cannot
    // be answered before, so wait until the server counts all 8 in flight.
    wait_for_metric(&s, "pear_images_in_flight", "", |n| n == 8.0);
    b.send(format!("{}{}", classify(&["normal_1.jpg"; 8]), r#"{"cmd": 0x03, "request_data": null}"#).as_bytes());
    let rb = b.recv();
    let full: Vec<&Value> = entries(&rb).iter().filter(|e| e["message"].as_str().is_some_and(|m| m.contains("queue_capacity"))).collect();
    assert_eq!(full.len(), 7, "{rb}");
    a.send(br#"{"cmd": 0x03, "request_data": null}"#);
}

#[test]
fn model_commands() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let cur = c.request(r#"{"cmd": 0x22, "request_data": null}"#);
    assert_eq!(cur["cmd"], 0x23);
    assert_eq!(one(&cur)["file_name"], "pear-default.safetensors");
    assert_eq!(one(&cur)["result"], 2);
    assert_eq!(one(&cur)["error_code"], 0);

    let list = c.request(r#"{"cmd": 0x24, "request_data": null}"#);
    assert_eq!(list["cmd"], 0x25);
    assert_entry_keys(&list);
    let names: Vec<&str> = entries(&list).iter().map(|e| e["file_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken.safetensors", "pear-default.safetensors", "second.safetensors"]);
    assert!(entries(&list).iter().all(|e| e["result"] == 2 && e["error_code"] == 0));

    // change: success, then failures keep the previous model
    let ch = c.request(r#"{"cmd": 0x26, "request_data": ["second.safetensors"]}"#);
    assert_eq!(ch["cmd"], 0x27);
    assert_eq!(one(&ch)["result"], 2, "{ch}");
    assert_eq!(one(&c.request(r#"{"cmd": 0x22, "request_data": null}"#))["file_name"], "second.safetensors");
    for bad in ["broken.safetensors", "nope.safetensors", "../models/second.safetensors"] {
        let r = c.request(&format!("{{\"cmd\": 0x26, \"request_data\": [\"{bad}\"]}}"));
        assert_eq!(one(&r)["result"], 1, "{bad}: {r}");
        assert_eq!(one(&r)["error_code"], 2, "{bad}: {r}");
        assert_eq!(one(&c.request(r#"{"cmd": 0x22, "request_data": null}"#))["file_name"], "second.safetensors");
    }
    // the original's weight name resolves to its converted bundle
    let alias = c.request(r#"{"cmd": 0x26, "request_data": ["pear-default.pt"]}"#);
    assert_eq!(one(&alias)["result"], 2, "{alias}");
    assert_eq!(one(&alias)["file_name"], "pear-default.safetensors");
    // inference still works on the switched model
    let r = c.request(r#"{"cmd": 0x01, "request_data": ["normal_1.jpg"]}"#);
    assert_eq!(entries(&r)[0]["error_code"], 0);

    // delete: active refused, missing, success
    let del = c.request(r#"{"cmd": 0x28, "request_data": ["pear-default.safetensors"]}"#);
    assert_eq!(del["cmd"], 0x29);
    assert_eq!((one(&del)["result"].clone(), one(&del)["error_code"].clone()), (Value::from(1), Value::from(1)));
    let del = c.request(r#"{"cmd": 0x28, "request_data": ["nope.safetensors"]}"#);
    assert_eq!((one(&del)["result"].clone(), one(&del)["error_code"].clone()), (Value::from(1), Value::from(2)));
    let del = c.request(r#"{"cmd": 0x28, "request_data": ["../server.toml"]}"#);
    assert_eq!(one(&del)["result"], 1);
    assert!(s.dir.join("server.toml").exists());
    let del = c.request(r#"{"cmd": 0x28, "request_data": ["second.safetensors"]}"#);
    assert_eq!((one(&del)["result"].clone(), one(&del)["error_code"].clone()), (Value::from(2), Value::from(0)));
    assert!(!s.dir.join("models/second.safetensors").exists());
}

#[test]
fn empty_model_folder_and_model_folder_change() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let bad = c.request(r#"{"cmd": 0x34, "request_data": ["/etc"]}"#);
    assert_eq!(bad["cmd"], 0x35);
    assert_eq!(one(&bad)["result"], 1);
    let missing = c.request(r#"{"cmd": 0x34, "request_data": ["/no/such/folder"]}"#);
    assert_eq!((one(&missing)["result"].clone(), one(&missing)["error_code"].clone()), (Value::from(1), Value::from(2)));
    let dir2 = s.dir.join("models2");
    let ok = c.request(&format!("{{\"cmd\": 0x34, \"request_data\": [\"{}\"]}}", dir2.display()));
    assert_eq!(one(&ok)["result"], 2, "{ok}");
    assert_eq!(one(&ok)["file_name"], dir2.canonicalize().unwrap().display().to_string());
    let list = c.request(r#"{"cmd": 0x24, "request_data": null}"#);
    let e = one(&list);
    assert!(e["file_name"].is_null());
    assert_eq!((e["result"].clone(), e["error_code"].clone()), (Value::from(1), Value::from(2)));
    // the active model is still loaded and answers
    assert_eq!(one(&c.request(r#"{"cmd": 0x22, "request_data": null}"#))["file_name"], "pear-default.safetensors");
}

#[test]
fn image_folder_commands() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let cur = c.request(r#"{"cmd": 0x32, "request_data": null}"#);
    assert_eq!(cur["cmd"], 0x33);
    let images = s.dir.join("images").canonicalize().unwrap();
    assert_eq!(one(&cur)["file_name"], images.display().to_string());
    assert_eq!(one(&cur)["result"], 2);
    for bad in ["/etc", "../outside", "/no/such"] {
        let r = c.request(&format!("{{\"cmd\": 0x30, \"request_data\": [\"{bad}\"]}}"));
        assert_eq!(r["cmd"], 0x31);
        assert_eq!(one(&r)["result"], 1, "{bad}: {r}");
    }
    let ok = c.request(r#"{"cmd": 0x30, "request_data": ["sub"]}"#);
    assert_eq!(one(&ok)["result"], 2, "{ok}");
    assert_eq!(one(&ok)["file_name"], images.join("sub").display().to_string());
    let r = c.request(r#"{"cmd": 0x01, "request_data": ["nested.jpg", "normal_1.jpg"]}"#);
    assert_eq!(entries(&r)[0]["error_code"], 0);
    assert_eq!(entries(&r)[1]["error_code"], 2, "files are now looked up in the new folder");
}

/// A one-shot HTTP server on 127.0.0.1 serving `body` (or a status) once per connection.
fn http_server(body: Vec<u8>, status: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn download_model_over_http() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let base = http_server(std::fs::read(default_model()).unwrap(), "200 OK");
    let r = c.request(&format!("{{\"cmd\": 0x20, \"request_data\": [\"{base}/models/fresh.safetensors\"]}}"));
    assert_eq!(r["cmd"], 0x21);
    assert_eq!(one(&r)["result"], 2, "{r}");
    assert_eq!(one(&r)["file_name"], "fresh.safetensors");
    assert!(s.dir.join("models/fresh.safetensors").is_file());
    let ch = c.request(r#"{"cmd": 0x26, "request_data": ["fresh.safetensors"]}"#);
    assert_eq!(one(&ch)["result"], 2);
}

#[test]
fn failed_downloads_leave_nothing_and_keep_the_model() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let before: Vec<_> = std::fs::read_dir(s.dir.join("models")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let garbage = http_server(b"definitely not a model".to_vec(), "200 OK");
    let missing = http_server(b"nope".to_vec(), "404 Not Found");
    let refused = "http://127.0.0.1:9/m.safetensors".to_string(); // nothing listens on port 9
    for url in [format!("{garbage}/bad.safetensors"), format!("{missing}/gone.safetensors"), refused, format!("{garbage}/weights.pt")] {
        let r = c.request(&format!("{{\"cmd\": 0x20, \"request_data\": [\"{url}\"]}}"));
        assert_eq!(r["cmd"], 0x21);
        assert_eq!(one(&r)["result"], 1, "{url}: {r}");
        let after: Vec<_> = std::fs::read_dir(s.dir.join("models")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(after.len(), before.len(), "{url}: nothing left behind: {after:?}");
    }
    assert_eq!(one(&c.request(r#"{"cmd": 0x22, "request_data": null}"#))["file_name"], "pear-default.safetensors");
    let r = c.request(r#"{"cmd": 0x01, "request_data": ["normal_1.jpg"]}"#);
    assert_eq!(entries(&r)[0]["error_code"], 0);
}

/// The request timeout bounds waiting without progress, not a batch the
/// server accepted: 6 images of at least 400 ms each (2.4 s) under a 1 s
/// timeout are all answered.
#[test]
fn an_accepted_batch_is_answered_whole() {
    let s = TestServer::start(Options { workers: 1, request_timeout_secs: 1, min_inference_ms: 400, ..Options::default() });
    let r = s.client().request(&classify(&["normal_1.jpg"; 6]));
    assert!(entries(&r).iter().all(|e| e["error_code"] == 0), "{r}");
}

/// A batch whose images make no progress for the whole timeout (each takes
/// at least 3 s, the timeout is 1 s) answers error 4 instead of hanging.
#[test]
fn a_stalled_batch_times_out() {
    let s =
        TestServer::start(Options { workers: 1, request_timeout_secs: 1, min_inference_ms: 3000, extended: true, ..Options::default() });
    let r = s.client().request(&classify(&["normal_1.jpg"; 3]));
    for e in entries(&r) {
        assert_eq!(e["error_code"], 4, "{r}");
        assert!(e["message"].as_str().unwrap().contains("request_timeout_secs"), "{r}");
    }
}
