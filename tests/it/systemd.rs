//! systemd readiness (`Type=notify`): READY=1 only once the model is loaded
//! and the server answers, never from a server that cannot load its model;
//! watchdog pings (WATCHDOG_USEC set); STOPPING=1 when a SIGTERM starts the drain. The test plays systemd's part
//! with a datagram socket of its own in NOTIFY_SOCKET.

use crate::common::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn notify_socket(name: &str) -> (UnixDatagram, String) {
    let path = std::env::temp_dir().join(format!("pear-notify-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    (sock, path.display().to_string())
}

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification from the server");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_after_the_model_loaded_and_stopping_on_sigterm() {
    let (sock, path) = notify_socket("ready");
    let env = vec![("NOTIFY_SOCKET".into(), path.clone()), ("WATCHDOG_USEC".into(), "400000".into())];
    let mut s = TestServer::start(Options { env, ..Options::default() });
    assert!(next(&sock).contains("READY=1"));
    // Ready means serving, with the model loaded.
    let r = s.client().request(r#"{"cmd": 0x22, "request_data": null}"#);
    assert_eq!(entries(&r)[0]["file_name"], "pear-default.safetensors");
    // The watchdog is fed (every 200 ms) once the server answered its own 0x22.
    assert!(next(&sock).contains("WATCHDOG=1"));
    s.signal(libc::SIGTERM);
    let mut stopping = false;
    for _ in 0..100 {
        if next(&sock).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = std::fs::remove_file(path);
}

#[test]
fn never_ready_without_a_model() {
    let (sock, path) = notify_socket("broken");
    let dir = std::env::temp_dir().join(format!("pear-notify-{}-broken", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::write(dir.join("models/broken.safetensors"), b"not a model").unwrap();
    std::fs::write(
        dir.join("server.toml"),
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[model]\ndir = \"models\"\ndefault = \"broken.safetensors\"\n[images]\ndir = \"images\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pear-server"))
        .arg("--config")
        .arg(dir.join("server.toml"))
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(sock.recv(&mut buf).is_err(), "a server that cannot load its model must not say READY");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(path);
}
