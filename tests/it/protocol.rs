//! Wire-level behaviour over real TCP: framing, hex/decimal, pipelining, and
//! malformed input answered with clear errors while the server keeps serving.

use crate::common::*;

const CURRENT_DIR: &str = r#"{"cmd": 0x32, "request_data": null}"#;

#[test]
fn hex_and_decimal_cmd() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let a = c.request(r#"{"cmd": 0x22, "request_data": null}"#);
    let b = c.request(r#"{"cmd": 34, "request_data": []}"#);
    let spaced = c.request(r#"{"cmd" : 0x32, "request_data": null }"#);
    assert_eq!(a["cmd"], 0x23);
    assert_eq!(a, b);
    assert_eq!(spaced["cmd"], 0x33);
}

/// The original opened `os.path.join(image_folder, name)`, and its own test
/// client sends the folder joined with the file name: an absolute name inside
/// the image folder is classified like the relative one; outside it, directly
/// or through a symlink or `..`, it is refused with error 1.
#[test]
fn absolute_names_inside_the_folder_are_classified() {
    let s = TestServer::start(Options::default());
    let images = s.dir.join("images").canonicalize().unwrap();
    let mut c = s.client();
    let names = [
        images.join("rot_1.jpg"),
        images.join("sub/nested.jpg"),
        s.dir.join("outside/secret.jpg"),
        images.join("link_out.jpg"),
        images.join("../outside/secret.jpg"),
    ];
    let list: Vec<String> = names.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
    let r = c.request(&format!(r#"{{"cmd": 0x01, "request_data": [{}]}}"#, list.join(", ")));
    let e = entries(&r);
    let relative = c.request(&classify(&["rot_1.jpg", "sub/nested.jpg"]));
    for i in 0..2 {
        assert_eq!(e[i]["error_code"], 0, "{r}");
        assert_eq!(e[i]["result"], entries(&relative)[i]["result"], "answered as the relative name: {r} {relative}");
        assert_eq!(e[i]["file_name"], list[i].trim_matches('"'), "the name is echoed as sent");
    }
    for (i, x) in e.iter().enumerate().skip(2) {
        assert_eq!(x["error_code"], 1, "entry {i} leads outside the folder: {r}");
        assert!(x["result"].is_null(), "{r}");
    }
}

/// A client that writes one request and reads one answer stays in step
/// when it sends garbage: `garbage{` and then a request in one write give
/// exactly one error and then the request's answer (the 0x32 after them is
/// answered next, so nothing else came in between).
#[test]
fn a_garbage_run_gets_one_error() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    c.send(b"garbage{{\"cmd\": 0x22, \"request_data\": null}");
    assert_error(&c.recv(), 1);
    assert_eq!(c.recv()["cmd"], 0x23);
    assert_eq!(c.request(r#"{"cmd": 0x32, "request_data": null}"#)["cmd"], 0x33);
    // Split anywhere, the same: the garbage and its brace in one write, the request in the next.
    c.send(b"garbage{");
    assert_error(&c.recv(), 1);
    c.send(br#"{"cmd": 0x22, "request_data": null}"#);
    assert_eq!(c.recv()["cmd"], 0x23);
    assert_eq!(c.request(r#"{"cmd": 0x32, "request_data": null}"#)["cmd"], 0x33);
}

#[test]
fn request_split_byte_by_byte() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    for b in br#"{"cmd": 0x01, "request_data": ["normal_1.jpg"]}"# {
        c.send(&[*b]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let r = c.recv();
    assert_eq!(r["cmd"], 0x02);
    assert_eq!(entries(&r)[0]["file_name"], "normal_1.jpg");
    assert_eq!(entries(&r)[0]["error_code"], 0);
}

#[test]
fn three_requests_in_one_write_and_netcat_newlines() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    c.send(b"{\"cmd\": 0x22, \"request_data\": null}{\"cmd\":0x32,\"request_data\":null}  {\"cmd\": 0x24, \"request_data\": []}");
    assert_eq!(c.recv()["cmd"], 0x23);
    assert_eq!(c.recv()["cmd"], 0x33);
    assert_eq!(c.recv()["cmd"], 0x25);
    // netcat style: one request per line, CRLF or LF
    c.send(b"{\"cmd\": 0x22, \"request_data\": null}\r\n{\"cmd\": 0x32, \"request_data\": null}\n");
    assert_eq!(c.recv()["cmd"], 0x23);
    assert_eq!(c.recv()["cmd"], 0x33);
}

#[test]
fn pipelined_requests_answer_in_order() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    // A slow 0x01 first, then cheap requests: answers must keep request order.
    let batch: Vec<String> = (0..6).map(|_| "\"normal_1.jpg\"".to_string()).collect();
    let mut all = format!("{{\"cmd\": 1, \"request_data\": [{}]}}", batch.join(","));
    all.push_str(CURRENT_DIR);
    all.push_str(r#"{"cmd": 1, "request_data": ["no_pear_1.jpg"]}"#);
    all.push_str(r#"{"cmd": 0x22, "request_data": null}"#);
    all.push_str("garbage\n");
    all.push_str(r#"{"cmd": 0x24, "request_data": null}"#);
    c.send(all.as_bytes());
    let order: Vec<serde_json::Value> = (0..6).map(|_| c.recv()).collect();
    assert_eq!(order[0]["cmd"], 0x02);
    assert_eq!(entries(&order[0]).len(), 6);
    assert_eq!(order[1]["cmd"], 0x33);
    assert_eq!(order[2]["cmd"], 0x02);
    assert_eq!(order[3]["cmd"], 0x23);
    assert!(order[4]["cmd"].is_null());
    assert_eq!(order[5]["cmd"], 0x25);
}

/// Each input must get one error_code-1 answer with a message, and the same
/// connection must still answer a good request afterwards.
#[test]
fn malformed_inputs_get_clear_errors() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"hello world\n".to_vec()),
        ("truncated json", b"{\"cmd\": 0x22, \"request_data\": nul}".to_vec()),
        ("not utf-8", b"{\"cmd\": 1, \"request_data\": [\"\xff\xfe.jpg\"]}".to_vec()),
        ("array instead of object", b"[1, 2, 3]".to_vec()),
        ("string instead of object", b"\"cmd\"\n".to_vec()),
        ("number instead of object", b"42\n".to_vec()),
        ("missing cmd", b"{\"request_data\": null}".to_vec()),
        ("missing request_data", b"{\"cmd\": 0x22}".to_vec()),
        ("cmd is a string", b"{\"cmd\": \"0x22\", \"request_data\": null}".to_vec()),
        ("cmd is negative", b"{\"cmd\": -1, \"request_data\": null}".to_vec()),
        ("cmd is a float", b"{\"cmd\": 1.5, \"request_data\": null}".to_vec()),
        ("cmd is null", b"{\"cmd\": null, \"request_data\": null}".to_vec()),
        ("unknown command", b"{\"cmd\": 0x99, \"request_data\": null}".to_vec()),
        ("unknown command 0x02 (a response code)", b"{\"cmd\": 0x02, \"request_data\": null}".to_vec()),
        ("hex too large", b"{\"cmd\": 0xffffffffffffffffff, \"request_data\": null}".to_vec()),
        ("empty file list", b"{\"cmd\": 0x01, \"request_data\": []}".to_vec()),
        ("null file list", b"{\"cmd\": 0x01, \"request_data\": null}".to_vec()),
        ("file list is a string", b"{\"cmd\": 0x01, \"request_data\": \"a.jpg\"}".to_vec()),
        ("file name not a string", b"{\"cmd\": 0x01, \"request_data\": [7]}".to_vec()),
        ("wrong extension", b"{\"cmd\": 0x01, \"request_data\": [\"notes.txt\"]}".to_vec()),
        ("no extension", b"{\"cmd\": 0x01, \"request_data\": [\"image\"]}".to_vec()),
        ("data for a no-data command", b"{\"cmd\": 0x22, \"request_data\": [\"x\"]}".to_vec()),
        ("two model names", b"{\"cmd\": 0x26, \"request_data\": [\"a\", \"b\"]}".to_vec()),
        ("model name missing", b"{\"cmd\": 0x26, \"request_data\": []}".to_vec()),
        ("empty folder path", b"{\"cmd\": 0x30, \"request_data\": [\"\"]}".to_vec()),
        ("folder path not a string", b"{\"cmd\": 0x34, \"request_data\": [true]}".to_vec()),
        ("download without URL scheme", b"{\"cmd\": 0x20, \"request_data\": [\"ftp://x/m.safetensors\"]}".to_vec()),
        ("unterminated string", b"{\"cmd\": 0x22, \"request_data: null}\n".to_vec()),
        ("unbalanced bracket", b"{\"cmd\": 0x22, \"request_data\": [}".to_vec()),
        ("trailing comma", b"{\"cmd\": 0x22, \"request_data\": null,}".to_vec()),
    ];
    for (what, bytes) in &cases {
        c.send(bytes);
        let r = c.recv();
        let msg = assert_error(&r, 1);
        assert!(msg.len() > 8, "{what}: message too vague: {msg}");
        // Still serving on the same connection.
        let ok = c.request(CURRENT_DIR);
        assert_eq!(ok["cmd"], 0x33, "{what}: connection no longer serves: {ok}");
    }
}

#[test]
fn path_traversal_is_refused_per_file() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    let r = c.request(
        r#"{"cmd": 0x01, "request_data": ["../outside/secret.jpg", "/etc/passwd.jpg", "link_out.jpg", "sub/nested.jpg", "missing.jpg", "corrupt.jpg", "0x1f.jpg"]}"#,
    );
    assert_eq!(r["cmd"], 0x02);
    assert_entry_keys(&r);
    let e = entries(&r);
    assert_eq!(e.len(), 7);
    for (i, x) in e[..3].iter().enumerate() {
        assert_eq!(x["error_code"], 1, "entry {i} must be refused: {r}");
        assert!(x["result"].is_null());
    }
    assert_eq!(e[3]["error_code"], 0, "subfolders inside the image folder are fine: {r}");
    for (i, x) in e.iter().enumerate().take(7).skip(4) {
        assert_eq!(x["error_code"], 2, "entry {i} is missing/unreadable: {r}");
        assert!(x["result"].is_null(), "never `false` like the original: {r}");
    }
    // the hex-looking file name reached the server intact
    assert_eq!(e[6]["file_name"], "0x1f.jpg");
}

#[test]
fn oversize_request_closes_only_that_connection() {
    let s = TestServer::start(Options { max_request_bytes: 1024, ..Options::default() });
    let mut other = s.client();
    let mut c = s.client();
    let big = format!("{{\"cmd\": 1, \"request_data\": [\"{}.jpg\"]}}", "a".repeat(5000));
    c.send(big.as_bytes());
    let msg = assert_error(&c.recv(), 1);
    assert!(msg.contains("1024"), "{msg}");
    assert!(c.closed(), "connection must be closed after an oversize request");
    assert_eq!(other.request(CURRENT_DIR)["cmd"], 0x33);
    assert_eq!(s.client().request(CURRENT_DIR)["cmd"], 0x33);
}

#[test]
fn connection_limit() {
    let s = TestServer::start(Options { max_connections: 2, ..Options::default() });
    let mut a = s.client();
    let mut b = s.client();
    assert_eq!(a.request(CURRENT_DIR)["cmd"], 0x33);
    assert_eq!(b.request(CURRENT_DIR)["cmd"], 0x33);
    let mut third = s.client();
    let msg = assert_error(&third.recv(), 3);
    assert!(msg.contains("connections"), "{msg}");
    assert!(third.closed());
    assert_eq!(a.request(CURRENT_DIR)["cmd"], 0x33, "others unaffected");
    drop(b);
    // The slot frees once the server has seen b close; wait for that event
    // (bounded), not for a guessed delay.
    let mut freed = false;
    for _ in 0..100 {
        let r = s.client().request(CURRENT_DIR);
        if r["cmd"] == 0x33 {
            freed = true;
            break;
        }
        assert!(assert_error(&r, 3).contains("max_connections"), "{r}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(freed, "a slot frees when a client leaves");
}

/// `server.max_request_bytes` is exact: a request of that many bytes is
/// served, one byte more is refused and closes its connection.
#[test]
fn request_limit_is_exact() {
    let s = TestServer::start(Options { max_request_bytes: 64, ..Options::default() });
    let pad = |n: usize| format!("{{\"cmd\": 34, \"request_data\": null{}}}", " ".repeat(n));
    let base = pad(0).len();
    let mut c = s.client();
    assert_eq!(c.request(&pad(64 - base))["cmd"], 35, "exactly 64 bytes is served");
    c.send(pad(65 - base).as_bytes());
    let msg = assert_error(&c.recv(), 1);
    assert!(msg.contains("64"), "{msg}");
    assert!(c.closed(), "65 bytes closes the connection");
}

/// An unfinished request followed by a complete one: the first is an error,
/// the second is answered (it used to be swallowed).
#[test]
fn unfinished_request_does_not_swallow_the_next() {
    let s = TestServer::start(Options::default());
    let mut c = s.client();
    c.send(br#"{"cmd": 1, "request_data": ["normal_1.jpg" "#);
    c.send(b"\n");
    c.send(br#"{"cmd": 34, "request_data": null}"#);
    let msg = assert_error(&c.recv(), 1);
    assert!(msg.contains("unfinished"), "{msg}");
    assert_eq!(c.recv()["cmd"], 35);
}
