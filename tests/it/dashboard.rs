//! The dashboard in a real browser: headless Chromium loads `/` of a server
//! that answered known traffic, runs the page's script, and the DOM it dumps
//! shows the counts and thumbnails that traffic calls for.
//!
//! Without `chromium` installed it says SKIPPED and passes, unless
//! `PEAR_REQUIRE_BROWSER` is set (`.ci/run` installs it and sets that).

use crate::common::*;
use std::collections::BTreeMap;
use std::process::Command;

fn chromium() -> Option<String> {
    let found =
        ["chromium", "chromium-browser"].into_iter().find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(std::env::var_os("PEAR_REQUIRE_BROWSER").is_none(), "PEAR_REQUIRE_BROWSER is set but no chromium is installed");
        eprintln!("dashboard: SKIPPED, no chromium (apt-get install chromium; .ci/run does)");
    }
    found.map(str::to_string)
}

/// The page's DOM after its script has run (virtual time: no wall-clock wait).
fn dump_dom(browser: &str, s: &TestServer) -> String {
    let profile = s.dir.join("chromium");
    let url = format!("http://127.0.0.1:{}/", s.metrics.unwrap().port());
    let (out, err) = (s.dir.join("dom.html"), s.dir.join("chromium.log"));
    // To files, not pipes, in a process group of its own that is killed
    // after: chromium's helpers (crash handler, zygote) outlive it and would
    // hold the test's pipes open for minutes.
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(browser)
        // The old headless mode honours --virtual-time-budget with fetches in flight.
        .args(["--headless=old", "--no-sandbox", "--disable-gpu", "--disable-breakpad", "--virtual-time-budget=8000", "--dump-dom"])
        // Virtual time waits for every fetch in flight, chromium's own background
        // requests too, which go nowhere without internet: none of those.
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        .args(["--disable-domain-reliability", "--disable-client-side-phishing-detection", "--disable-default-apps"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    // Bounded: a stalled browser is killed (its whole group) and the test fails.
    let group = child.id() as i32;
    let (done, finished) = crossbeam_channel::bounded::<()>(1);
    let watchdog = std::thread::spawn(move || {
        let stalled = finished.recv_timeout(std::time::Duration::from_secs(120)).is_err();
        if stalled {
            // SAFETY: kill(2) on the process group this test made.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        stalled
    });
    let status = child.wait().unwrap();
    let _ = done.send(());
    assert!(!watchdog.join().unwrap(), "chromium did not finish within 120 s");
    // SAFETY: kill(2) on the process group this test made.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    assert!(status.success(), "chromium failed: {}", std::fs::read_to_string(&err).unwrap_or_default());
    std::fs::read_to_string(&out).unwrap()
}

/// The text of the element with this id, in the dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(&rest[start..start + end])
}

#[test]
fn the_dashboard_shows_the_traffic_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let s = TestServer::start(Options { journal: true, metrics: true, ..Options::default() });
    let mut c = s.client();
    let files = ["rot_1.jpg", "bruise_1.jpg", "normal_1.jpg", "normal_2.jpg", "no_pear_1.jpg", "missing.jpg", "crack_1.jpg", "rot_1.jpg"];
    let r = c.request(&classify(&files));
    let mut by_class = BTreeMap::new();
    for e in entries(&r).iter().filter(|e| e["error_code"] == 0) {
        *by_class.entry(e["result"].as_i64().unwrap()).or_insert(0) += 1;
    }
    wait_for_metric(&s, "pear_journal_rows_total", "", |v| v == files.len() as f64);

    let dom = dump_dom(&browser, &s);
    assert!(dom.contains("data-ready=\"1\""), "the script never finished a refresh: {dom:.3000}");
    assert_eq!(text_of(&dom, "problem"), Some(""), "{dom:.3000}");
    assert_eq!(text_of(&dom, "model"), Some("pear-default.safetensors"));
    assert_eq!(text_of(&dom, "total-images"), Some("8"));
    assert_eq!(text_of(&dom, "total-errors"), Some("1"));
    for (class, n) in &by_class {
        assert_eq!(text_of(&dom, &format!("count-class-{class}")), Some(n.to_string().as_str()), "class {class}");
    }
    assert_eq!(dom.matches("<figure class=\"thumb\"").count(), files.len(), "one thumbnail per image, newest first");
    assert_eq!(dom.matches("<img ").count(), files.len() - 1, "every image that was read has its picture; missing.jpg has none");
    // A thumbnail is a JPEG of at most 320 pixels a side, made from the record id alone.
    let (status, body) = s.http_get("/api/inspections/1/image");
    assert_eq!(status, 200);
    assert!(body.len() > 1000, "a JPEG of {} bytes", body.len());
    assert_eq!(s.http_get("/api/inspections/..%2F..%2Fetc%2Fpasswd/image").0, 400, "ids only");
    assert_eq!(s.http_get("/api/inspections/999/image").0, 404);
}

/// With credentials set, the page itself asks for them too.
#[test]
fn the_dashboard_asks_for_credentials_when_set() {
    let s =
        TestServer::start(Options { journal: true, metrics: true, metrics_credentials: Some("line:s3cret".into()), ..Options::default() });
    assert_eq!(s.http_get("/").0, 401);
    let (status, body) = s.http_get_with("/", "Authorization: Basic bGluZTpzM2NyZXQ=\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("<title>pear-server</title>"));
}
