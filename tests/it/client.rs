//! `pear-client` against real servers: the folder report and pictures, exit
//! codes, `--servers`, and `bench` figures that match the server's /metrics.

use crate::common::*;
use std::process::{Command, Output};

fn client(s: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pear-client")).arg("--server").arg(s.addr.to_string()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The true class of a sample, from its name: "rot_1.jpg" -> "rot"; "no_pear_1.jpg" -> None.
fn truth(name: &str) -> Option<String> {
    let stem = name.rsplit_once('_').map(|(s, _)| s).unwrap_or(name);
    (stem != "no_pear").then(|| stem.to_string())
}

#[test]
fn classify_a_folder_with_report_and_pictures() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let samples = std::path::Path::new(ROOT).join("samples");
    let out = s.dir.join("annotated");
    let csv = s.dir.join("report.csv");
    let o = client(
        &s,
        &[
            "classify",
            "--dir",
            samples.to_str().unwrap(),
            "--batch",
            "4",
            "--csv",
            csv.to_str().unwrap(),
            "--annotate",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "no progress bar when stderr is not a terminal: {:?}", String::from_utf8_lossy(&o.stderr));
    let report = std::fs::read_to_string(&csv).unwrap();
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("file,class,label,confidence,box,error"));
    let mut n = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 6, "{line}");
        let (file, class, label, bx, error) = (f[0], f[1], f[2], f[4], f[5]);
        assert_eq!(error, "", "{line}");
        match truth(file) {
            Some(t) => {
                assert_eq!(label, t, "{line}");
                assert_eq!(bx.split(' ').count(), 4, "{line}");
            }
            None => assert_eq!((class, label, bx), ("0", "", ""), "{line}"),
        }
        // The picture: same size as the sample, with the box colour on it.
        let pic = image::open(out.join(file).with_extension("jpg")).unwrap().to_rgb8();
        let orig = image::open(samples.join(file)).unwrap();
        assert_eq!((pic.width(), pic.height()), (orig.width(), orig.height()));
        let boxy = pic.pixels().filter(|p| p[0] > 200 && p[1] > 150 && p[1] < 240 && p[2] < 80).count();
        assert!(boxy > 100, "{file}: no box or label drawn ({boxy} pixels)");
        n += 1;
    }
    assert_eq!(n, std::fs::read_dir(&samples).unwrap().count());
}

#[test]
fn exit_codes_and_messages() {
    let s = TestServer::start(Options::default());
    let o = client(&s, &["current"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).trim(), "pear-default.safetensors");
    let o = client(&s, &["use", "missing.safetensors"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not found"), "{}", stdout(&o));
    let o = client(&s, &["classify", "normal_1.jpg", "missing.jpg"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("missing.jpg: error 2"), "{}", stdout(&o));
    let o = client(&s, &["--json", "models"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["cmd"], 0x25);
    let o = Command::new(env!("CARGO_BIN_EXE_pear-client")).args(["--server", "127.0.0.1:9", "current"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "unreachable server");
}

#[test]
fn servers_option_applies_a_change_to_every_server() {
    let (a, b) = (TestServer::start(Options::default()), TestServer::start(Options::default()));
    let list = format!("{},{}", a.addr, b.addr);
    let o = Command::new(env!("CARGO_BIN_EXE_pear-client")).args(["--servers", &list, "use", "second.safetensors"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    for s in [&a, &b] {
        assert!(stdout(&o).contains(&format!("{}: second.safetensors", s.addr)), "{}", stdout(&o));
        assert_eq!(entries(&s.client().request(r#"{"cmd": 0x22, "request_data": null}"#))[0]["file_name"], "second.safetensors");
    }
}

#[test]
fn bench_figures_match_the_servers_metrics() {
    let s = TestServer::start(Options { metrics: true, ..Options::default() });
    let before = scrape(&s);
    let o = client(&s, &["--json", "bench", "--connections", "2", "--images", "3", "--duration", "2", "--probe-ms", "50"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let b: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let after = scrape(&s);
    let d = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert!(b["images"].as_f64().unwrap() > 0.0);
    assert_eq!(b["images"].as_f64().unwrap(), d("pear_images_by_error_code_total", "error_code=0"));
    assert_eq!(b["requests"].as_f64().unwrap(), d("pear_requests_total", "command=0x01,outcome=ok"));
    assert_eq!(b["probe_ms"]["count"].as_f64().unwrap(), d("pear_requests_total", "command=0x22,outcome=ok"));
}

#[test]
fn classify_one_fruit_with_a_deadline() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let o = client(&s, &["classify", "--fruit", "9", "--deadline-ms", "60000", "normal_1.jpg", "rot_1.jpg"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("fruit 9: ") && last.contains("from rot_1.jpg") && last.contains("2 view(s) judged"), "{text}");
    let o = client(&s, &["--json", "classify", "--fruit", "lot-1", "no_pear_1.jpg"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!((v["fruit"]["fruit_id"].as_str(), v["fruit"]["error_code"].as_i64()), (Some("lot-1"), Some(2)), "{v}");
}

/// Fruits of two views: every one graded with a deadline that is easy to
/// meet; with a 1 ms deadline (each image takes at least 50 ms here), images
/// miss it, and the bench's count of misses is the server's.
#[test]
fn bench_fruits_with_deadlines_matches_the_servers_metrics() {
    let s = TestServer::start(Options { metrics: true, min_inference_ms: 50, ..Options::default() });
    let m = s.metrics.unwrap().to_string();
    let run = |deadline: &str| {
        let before = scrape(&s);
        let args =
            ["--json", "bench", "--connections", "2", "--views", "2", "--deadline-ms", deadline, "--duration", "2", "--probe-ms", "0"];
        let o = client(&s, &[&args[..], &["--metrics", &m]].concat());
        let b: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
        let after = scrape(&s);
        let d = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
        assert!(b["fruits"].as_f64().unwrap() > 0.0, "{b}");
        assert_eq!(
            b["fruits"].as_f64().unwrap(),
            d("pear_requests_total", "command=0x01,outcome=ok") + d("pear_requests_total", "command=0x01,outcome=error")
        );
        assert_eq!(b["fruits_graded"].as_f64().unwrap(), d("pear_fruits_by_error_code_total", "error_code=0"), "{b}");
        let missed = b["deadline"]["missed_images"].as_f64().unwrap();
        assert_eq!(missed, d("pear_deadline_misses_total", ""), "{b}");
        assert_eq!(b["deadline"]["server_counted_misses"].as_f64(), Some(missed), "{b}");
        (b, o.status.code())
    };
    let (easy, code) = run("60000");
    assert_eq!(code, Some(0));
    assert_eq!((easy["fruits_graded"].clone(), easy["deadline"]["missed_images"].as_f64()), (easy["fruits"].clone(), Some(0.0)), "{easy}");
    let (hard, code) = run("1");
    assert!(hard["deadline"]["missed_images"].as_f64().unwrap() > 0.0, "no image takes less than 50 ms: {hard}");
    assert_eq!(code, Some(1), "misses are errors");
}
