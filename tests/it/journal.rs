//! The inspection journal against the real binary and a real SQLite file:
//! its rows equal the answers the client got; a SIGTERM drain loses none; a
//! full file system costs rows, counted, never an answer; a corrupt file is
//! moved aside; `max_rows` keeps the newest.

use crate::common::*;
use rusqlite::Connection;
use serde_json::Value;
use std::time::Duration;

/// One journal row, the columns a test compares.
#[derive(Debug, PartialEq)]
struct Row {
    file: String,
    result: Option<i64>,
    error_code: i64,
    image_sha256: Option<String>,
    model: String,
    model_sha256: String,
    fruit_id: Option<String>,
    missed_deadline: bool,
}

fn rows(s: &TestServer) -> Vec<Row> {
    let db = Connection::open(s.journal_path()).unwrap();
    let mut st = db
        .prepare(
            "SELECT file, result, error_code, image_sha256, model, model_sha256, fruit_id, missed_deadline FROM inspections ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok(Row {
            file: r.get(0)?,
            result: r.get(1)?,
            error_code: r.get(2)?,
            image_sha256: r.get(3)?,
            model: r.get(4)?,
            model_sha256: r.get(5)?,
            fruit_id: r.get(6)?,
            missed_deadline: r.get(7)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The rows the answers call for: an image's hash when it was read, the model that was active.
fn expected(s: &TestServer, answers: &[(Value, &str, Option<&str>)]) -> Vec<Row> {
    let mut out = Vec::new();
    for (answer, model, fruit) in answers {
        for e in entries(answer) {
            let file = e["file_name"].as_str().unwrap().to_string();
            let path = s.dir.join("images").join(&file);
            let code = e["error_code"].as_i64().unwrap();
            out.push(Row {
                image_sha256: (path.is_file() && code != 4).then(|| sha256_file(&path)),
                result: e["result"].as_i64(),
                error_code: code,
                model: model.to_string(),
                model_sha256: sha256_file(&s.dir.join("models").join(model)),
                fruit_id: fruit.map(str::to_string),
                missed_deadline: e["message"] == "deadline missed",
                file,
            });
        }
    }
    out
}

#[test]
fn the_journal_holds_exactly_the_answers() {
    let mut s = TestServer::start(Options { journal: true, metrics: true, ..Options::default() });
    let mut c = s.client();
    let mut answers = Vec::new();
    let r = c.request(&classify(&["normal_1.jpg", "rot_1.jpg", "missing.jpg", "no_pear_1.jpg", "corrupt.jpg"]));
    answers.push((r, "pear-default.safetensors", None));
    let r = c.request(&classify_with(&["bruise_1.jpg", "scab_1.jpg"], r#""fruit_id": "lot-9""#));
    answers.push((r, "pear-default.safetensors", Some("\"lot-9\"")));
    assert_eq!(entries(&c.request(r#"{"cmd": 0x26, "request_data": ["second.safetensors"]}"#))[0]["error_code"], 0);
    let r = c.request(&classify_with(&["crack_1.jpg"], r#""fruit_id": 12"#));
    answers.push((r, "second.safetensors", Some("12")));
    c.request(r#"{"cmd": 0x22, "request_data": null}"#); // not an image: no row
    wait_for_metric(&s, "pear_journal_rows_total", "", |v| v == 8.0);
    drain(&mut s);
    let got = rows(&s);
    assert_eq!(got, expected(&s, &answers));
    assert!(got.iter().any(|r| r.error_code == 2 && r.image_sha256.is_none()), "missing.jpg was never read");
    assert!(
        got.iter().any(|r| r.file == "corrupt.jpg" && r.error_code == 2 && r.image_sha256.is_some()),
        "corrupt.jpg was read, then refused"
    );
}

/// Every image holds the only worker 300 ms; the SIGTERM comes while most
/// are still queued. Each answered image is in the journal once the server
/// has exited.
#[test]
fn a_sigterm_drain_loses_no_row() {
    let mut s = TestServer::start(Options { journal: true, metrics: true, workers: 1, min_inference_ms: 300, ..Options::default() });
    let (mut a, mut b) = (s.client(), s.client());
    a.send(classify(&["normal_1.jpg", "rot_1.jpg", "bruise_1.jpg", "scab_1.jpg", "crack_1.jpg"]).as_bytes());
    b.send(classify_with(&["normal_2.jpg", "no_pear_1.jpg"], r#""deadline_ms": 60000"#).as_bytes());
    wait_for_metric(&s, "pear_images_in_flight", "", |v| v == 7.0);
    s.signal(libc::SIGTERM);
    let answers = vec![(a.recv(), "pear-default.safetensors", None), (b.recv(), "pear-default.safetensors", None)];
    assert!(answers.iter().all(|(r, ..)| entries(r).iter().all(|e| e["error_code"] == 0)), "{answers:?}");
    assert_eq!(s.wait_exit(Duration::from_secs(60)), Some(0));
    let mut want = expected(&s, &answers);
    let mut got = rows(&s);
    // The two connections' answers may be journaled in either order.
    want.sort_by(|x, y| x.file.cmp(&y.file));
    got.sort_by(|x, y| x.file.cmp(&y.file));
    assert_eq!(got, want);
}

/// Every file the server writes stops at 48 KiB, so the journal opens but
/// soon cannot grow: its rows are lost and counted, and every answer is as
/// without it.
#[test]
fn a_full_file_system_costs_rows_never_answers() {
    let s = TestServer::start(Options {
        journal: true,
        metrics: true,
        file_size_limit: Some(48 << 10),
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..Options::default()
    });
    let mut c = s.client();
    let n = 60;
    for i in 0..n {
        let f = ["normal_1.jpg", "rot_1.jpg", "bruise_1.jpg"][i % 3];
        let r = c.request(&classify(&[f]));
        assert_eq!(entries(&r)[0]["error_code"], 0, "answer {i}: {r}");
    }
    let total = |m: &std::collections::BTreeMap<(String, String), f64>| {
        metric(m, "pear_journal_rows_total", "") + metric(m, "pear_journal_errors_total", "")
    };
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = scrape(&s);
        if total(&m) == n as f64 {
            break m;
        }
        assert!(std::time::Instant::now() < until, "rows and errors do not add up to {n}: {m:?}");
    };
    assert!(metric(&m, "pear_journal_errors_total", "") > 0.0, "the limit was never reached: {m:?}");
    assert_eq!(entries(&c.request(r#"{"cmd": 0x22, "request_data": null}"#))[0]["error_code"], 0, "still serving");
    let log = s.log();
    assert!(metric(&m, "pear_journal_rows_total", "") > 0.0, "it opened and wrote at first: {m:?}");
    assert_eq!(log.matches("answers go on").count(), 1, "one log line per incident: {log}");
    assert!(log.contains("journal: cannot write"), "{log}");
}

#[test]
fn a_corrupt_journal_is_moved_aside_and_a_new_one_begun() {
    let garbage = b"this was never a database, but it is somebody's data".repeat(100);
    let mut s = TestServer::start(Options { journal: true, journal_seed: Some(garbage.clone()), ..Options::default() });
    let r = s.client().request(&classify(&["rot_1.jpg"]));
    drain(&mut s);
    assert_eq!(rows(&s), expected(&s, &[(r, "pear-default.safetensors", None)]));
    let aside: Vec<_> = std::fs::read_dir(s.dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("inspections.sqlite.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage, "the old file is kept as it was");
    assert!(s.log().contains("is unusable"), "{}", s.log());
}

#[test]
fn max_rows_keeps_the_newest() {
    let mut s = TestServer::start(Options { journal: true, journal_max_rows: Some(3), ..Options::default() });
    let mut c = s.client();
    c.request(&classify(&["normal_1.jpg", "normal_2.jpg", "rot_1.jpg", "bruise_1.jpg"]));
    let last = c.request(&classify(&["scab_1.jpg", "crack_1.jpg"]));
    drain(&mut s);
    let files: Vec<String> = rows(&s).into_iter().map(|r| r.file).collect();
    assert_eq!(files, ["bruise_1.jpg", "scab_1.jpg", "crack_1.jpg"], "{last}");
    let db = Connection::open(s.journal_path()).unwrap();
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, pear_server::journal::schema_version());
}

/// `/api/inspections` and `/api/summary` over known traffic, and `pear-client history` on top.
#[test]
fn the_history_api_and_client_answer_from_the_journal() {
    let s = TestServer::start(Options { journal: true, metrics: true, extended: true, ..Options::default() });
    let mut c = s.client();
    let first = c.request(&classify(&["normal_1.jpg", "rot_1.jpg", "missing.jpg", "sub/nested.jpg"]));
    assert_eq!(entries(&c.request(r#"{"cmd": 0x26, "request_data": ["second.safetensors"]}"#))[0]["error_code"], 0);
    let second = c.request(&classify(&["rot_1.jpg"]));
    wait_for_metric(&s, "pear_journal_rows_total", "", |v| v == 5.0);
    let api = |q: &str| {
        let (status, body) = s.http_get(&format!("/api/inspections?{q}"));
        assert_eq!(status, 200, "{q}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let files = |v: &Value| -> Vec<String> {
        v["inspections"].as_array().unwrap().iter().map(|r| r["file"].as_str().unwrap().to_string()).collect()
    };
    let all = api("");
    assert_eq!(files(&all), ["rot_1.jpg", "sub/nested.jpg", "missing.jpg", "rot_1.jpg", "normal_1.jpg"], "newest first");
    let newest = &all["inspections"][0];
    let e = &entries(&second)[0];
    assert_eq!((&newest["result"], &newest["label"], &newest["model"]), (&e["result"], &e["label"], &Value::from("second.safetensors")));
    assert_eq!(newest["confidence"], e["confidence"], "the confidence the client got, digit for digit");
    let rot = entries(&first)[1]["result"].as_i64().unwrap();
    assert_eq!(files(&api(&format!("class={rot}"))), ["rot_1.jpg", "rot_1.jpg"]);
    assert_eq!(files(&api("errors=1")), ["missing.jpg"]);
    assert_eq!(files(&api("file=sub%2F")), ["sub/nested.jpg"]);
    assert_eq!(files(&api("model=second.safetensors")), ["rot_1.jpg"]);
    let since = newest["time_ms"].as_i64().unwrap();
    assert_eq!(files(&api(&format!("since={since}"))), ["rot_1.jpg"]);
    // Paging: two, then two more, then the last one and no cursor.
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    for _ in 0..3 {
        let page = api(&format!("limit=2{cursor}"));
        seen.extend(files(&page));
        cursor = page["next_cursor"].as_i64().map(|c| format!("&cursor={c}")).unwrap_or_default();
    }
    assert_eq!(seen, files(&all));
    assert!(cursor.is_empty(), "the last page has no cursor");
    assert_eq!(s.http_get("/api/inspections?limit=zero").0, 400);
    assert_eq!(s.http_get("/api/inspections?dir=/etc").0, 400, "unknown parameters are refused, never used");

    let (status, body) = s.http_get("/api/summary?bucket=86400");
    assert_eq!(status, 200, "{body}");
    let sum: Value = serde_json::from_str(&body).unwrap();
    let images: i64 = sum["buckets"].as_array().unwrap().iter().map(|b| b["images"].as_i64().unwrap()).sum();
    let errors: i64 = sum["buckets"].as_array().unwrap().iter().map(|b| b["by_error_code"]["2"].as_i64().unwrap_or(0)).sum();
    let rots: i64 = sum["buckets"].as_array().unwrap().iter().map(|b| b["by_class"][rot.to_string()].as_i64().unwrap_or(0)).sum();
    assert_eq!((images, errors, rots), (5, 1, 2), "{sum}");

    let history = |args: &[&str]| {
        let api = s.metrics.unwrap().to_string();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_pear-client")).args(["history", "--api", &api]).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let csv = history(&["--since", "1h", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6, "a header and five records: {csv}");
    assert!(lines[0].starts_with("id,time_utc,file,result"), "{csv}");
    assert!(lines.iter().any(|l| l.contains("missing.jpg") && l.contains(",2,")), "{csv}");
    let text = history(&["--errors"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("missing.jpg  error 2"), "{text}");
}

/// A listener on every interface needs credentials: the history API asks
/// for them (401 without, 200 with), the scrapers' endpoints stay open.
#[test]
fn the_history_api_asks_for_credentials_off_loopback() {
    let s = TestServer::start(Options {
        journal: true,
        metrics: true,
        metrics_listen: Some("0.0.0.0:0".into()),
        metrics_credentials: Some("line:s3cret".into()),
        ..Options::default()
    });
    s.client().request(&classify(&["rot_1.jpg"]));
    wait_for_metric(&s, "pear_journal_rows_total", "", |v| v == 1.0);
    for path in ["/api/inspections", "/api/summary"] {
        assert_eq!(s.http_get(path).0, 401, "{path}");
        assert_eq!(s.http_get_with(path, "Authorization: Basic bGluZTp3cm9uZw==\r\n").0, 401, "{path}: line:wrong");
        let (status, body) = s.http_get_with(path, "Authorization: Basic bGluZTpzM2NyZXQ=\r\n"); // line:s3cret
        assert_eq!(status, 200, "{path}: {body}");
    }
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(s.http_get(open).0, 200, "{open}");
    }
}
