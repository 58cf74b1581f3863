//! The binary's command line: --help, and a bad config fails at start naming the key.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pear-server")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn help_lists_options() {
    let (code, out) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--config") && out.contains("--port"), "{out}");
}

#[test]
fn bad_config_names_the_key() {
    let dir = std::env::temp_dir().join(format!("pear-cli-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("weights")).unwrap(); // so the images.dir case reaches its own check
    let cases = [
        ("[server]\nport = 70000\n", "port"),
        ("[inference]\nworkers = 0\n", "inference.workers"),
        ("[model]\nconfidence_threshold = 2.0\n", "model.confidence_threshold"),
        ("[images]\ndir = \"/no/such/folder\"\n", "images.dir"),
        ("[protocl]\nextended_results = true\n", "protocl"),
        // The history API on every interface and nobody asked for a password: refused.
        ("[metrics]\nlisten = \"0.0.0.0:9091\"\n", "metrics.credentials"),
        // A captured image is named by its journal row: no journal, no capture.
        ("[journal]\ncapture = \"uncertain\"\n", "journal.capture"),
        ("[journal]\npath = \"j.sqlite\"\ncapture = \"uncertain\"\ncapture_below = 1.5\n", "journal.capture_below"),
        ("[journal]\npath = \"j.sqlite\"\ncapture = \"sometimes\"\n", "capture"),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, toml).unwrap();
        let (code, out) = run(&["--config", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{toml}: {out}");
        assert!(out.contains(key), "{toml}: message must name `{key}`: {out}");
    }
    let (code, out) = run(&["--config", "/no/such/server.toml"]);
    assert_eq!(code, 2);
    assert!(out.contains("/no/such/server.toml"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PEAR_SIMD naming no level, or one above this CPU's, stops the server
/// before it loads anything, with the variable named.
#[test]
fn bad_simd_level_is_refused_at_start() {
    use pear_model::simd::Simd;
    let mut wrong = vec!["sse9".to_string()];
    wrong.extend(Simd::ALL.into_iter().filter(|s| !s.runs_here()).map(|s| s.name().to_string()));
    for level in wrong {
        let out = Command::new(env!("CARGO_BIN_EXE_pear-server")).env("PEAR_SIMD", &level).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "PEAR_SIMD={level}: {text}");
        assert!(text.contains("PEAR_SIMD") && text.contains(&level), "PEAR_SIMD={level}: {text}");
    }
}
