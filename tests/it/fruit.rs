//! `fruit_id` on 0x01 over TCP: the answer grades the fruit from its views,
//! next to the per-image entries (unchanged). The expected grade is worked
//! out here from those entries (class, confidence, detected, with extended
//! results on), by the rule the README states.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

/// The fruit object of an answer, after checking its shape.
fn fruit(r: &Value) -> &Value {
    let f = &r["fruit"];
    for k in ["fruit_id", "result", "error_code", "views_judged", "decisive_view", "confidence"] {
        assert!(f.get(k).is_some(), "fruit lacks {k}: {r}");
    }
    f
}

/// The grade the rule gives for these entries: (result, decisive view, judged).
fn expected(r: &Value) -> (Option<i64>, Option<String>, usize) {
    let judged: Vec<&Value> = entries(r).iter().filter(|e| e["error_code"] == 0 && e["detected"] == true).collect();
    let conf = |e: &Value| e["confidence"].as_f64().unwrap();
    let pick = |defect: bool| {
        judged.iter().filter(|e| (e["result"] != 0) == defect).fold(None::<&Value>, |best, e| match best {
            Some(b) if conf(b) >= conf(e) => Some(b),
            _ => Some(e),
        })
    };
    let best = pick(true).or_else(|| pick(false));
    (best.and_then(|e| e["result"].as_i64()), best.map(|e| e["file_name"].as_str().unwrap().to_string()), judged.len())
}

fn assert_graded_as_expected(r: &Value) {
    let f = fruit(r);
    let (result, view, judged) = expected(r);
    assert_eq!(f["result"].as_i64(), result, "{r}");
    assert_eq!(f["decisive_view"].as_str().map(str::to_string), view, "{r}");
    assert_eq!(f["views_judged"].as_u64(), Some(judged as u64), "{r}");
}

#[test]
fn a_defect_in_one_view_grades_the_fruit() {
    let s = TestServer::start(Options { extended: true, metrics: true, ..Options::default() });
    let mut c = s.client();
    let r = c.request(&classify_with(&["normal_1.jpg", "rot_1.jpg", "normal_2.jpg"], r#""fruit_id": "lot7-0042""#));
    let e = entries(&r);
    assert_eq!(e.len(), 3, "one entry per view, as without fruit_id");
    assert_eq!((e[0]["result"].as_i64(), e[1]["label"].as_str()), (Some(0), Some("rot")), "{r}");
    let f = fruit(&r);
    assert_eq!((f["fruit_id"].as_str(), f["error_code"].as_i64()), (Some("lot7-0042"), Some(0)), "{r}");
    assert_eq!(f["result"], e[1]["result"], "rot in one view rejects the fruit: {r}");
    assert_eq!(f["confidence"], e[1]["confidence"], "{r}");
    assert_graded_as_expected(&r);
    let m = scrape(&s);
    assert_eq!(metric(&m, "pear_fruits_by_class_total", &format!("class={}", f["result"])), 1.0);
}

#[test]
fn all_normal_views_grade_normal() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let r = s.client().request(&classify_with(&["normal_1.jpg", "normal_2.jpg"], r#""fruit_id": 17"#));
    let f = fruit(&r);
    assert_eq!((f["fruit_id"].as_i64(), f["result"].as_i64(), f["views_judged"].as_i64()), (Some(17), Some(0), Some(2)), "{r}");
    assert_graded_as_expected(&r);
}

#[test]
fn no_pear_in_any_view_is_no_grade() {
    let s = TestServer::start(Options { extended: true, ..Options::default() });
    let r = s.client().request(&classify_with(&["no_pear_1.jpg", "no_pear_1.jpg"], r#""fruit_id": 1"#));
    assert!(entries(&r).iter().all(|e| e["error_code"] == 0 && e["detected"] == false), "{r}");
    let f = fruit(&r);
    assert!(f["result"].is_null() && f["decisive_view"].is_null(), "{r}");
    assert_eq!((f["error_code"].as_i64(), f["views_judged"].as_i64()), (Some(2), Some(0)), "{r}");
    assert!(f["message"].as_str().unwrap().contains("2 no pear found"), "{r}");
}

/// A missing file is one view less; a fruit of missing files is error 2.
/// Without extended results the entries keep their old shape, but say why.
#[test]
fn a_missing_file_among_views() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let r = c.request(&classify_with(&["missing.jpg", "rot_1.jpg"], r#""fruit_id": 2"#));
    let e = entries(&r);
    assert_eq!(e[0]["error_code"], 2, "{r}");
    assert!(e[0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    let f = fruit(&r);
    assert_eq!((f["result"].clone(), f["views_judged"].as_i64()), (e[1]["result"].clone(), Some(1)), "{r}");
    assert_eq!(f["decisive_view"], "rot_1.jpg");
    let r = c.request(&classify_with(&["missing.jpg", "also_missing.png"], r#""fruit_id": 3"#));
    let f = fruit(&r);
    assert!(f["result"].is_null(), "{r}");
    assert_eq!(f["error_code"], 2, "{r}");
    assert!(f["message"].as_str().unwrap().contains("2 unreadable"), "{r}");
}

/// Three views, each holding the only worker 1.5 s, due after 2.9 s: the
/// first is judged, the second is running and the third waiting when the
/// deadline comes. The grade is written then, from the first view alone.
#[test]
fn a_deadline_cuts_off_views_and_the_grade_uses_those_judged() {
    let s = TestServer::start(Options { workers: 1, min_inference_ms: 1500, extended: true, ..Options::default() });
    let mut c = s.client();
    c.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = c.request(&classify_with(&["rot_1.jpg", "normal_1.jpg", "bruise_1.jpg"], r#""fruit_id": "f", "deadline_ms": 2900"#));
    let e = entries(&r);
    assert_eq!(e[0]["error_code"], 0, "{r}");
    for cut in &e[1..] {
        assert_eq!((cut["error_code"].as_i64(), cut["message"].as_str()), (Some(4), Some("deadline missed")), "{r}");
    }
    let f = fruit(&r);
    assert_eq!((f["result"].clone(), f["views_judged"].as_i64(), f["error_code"].as_i64()), (e[0]["result"].clone(), Some(1), Some(0)));
    assert_graded_as_expected(&r);
}

/// `fruit.min_views_judged = 2`: one judged view of two is not enough.
#[test]
fn too_few_judged_views_leave_the_fruit_ungraded() {
    let s = TestServer::start(Options { min_views_judged: 2, ..Options::default() });
    let mut c = s.client();
    let r = c.request(&classify_with(&["rot_1.jpg", "no_pear_1.jpg"], r#""fruit_id": 4"#));
    let f = fruit(&r);
    assert!(f["result"].is_null(), "{r}");
    assert_eq!((f["error_code"].as_i64(), f["views_judged"].as_i64()), (Some(2), Some(1)), "{r}");
    assert!(f["message"].as_str().unwrap().contains("min_views_judged is 2"), "{r}");
    let r = c.request(&classify_with(&["rot_1.jpg", "normal_1.jpg"], r#""fruit_id": 5"#));
    assert_eq!(fruit(&r)["error_code"], 0, "{r}");
}

#[test]
fn bad_fruit_ids_are_refused() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let long = format!("\"{}\"", "x".repeat(257));
    // (An object is not tried: a request never holds one, so the framer cuts there.)
    for bad in ["\"\"", "1.5", "[1]", "-1.0", "null", "true", &long] {
        let r = c.request(&classify_with(&["normal_1.jpg"], &format!(r#""fruit_id": {bad}"#)));
        assert!(assert_error(&r, 1).contains("fruit_id"), "{bad}: {r}");
    }
}
