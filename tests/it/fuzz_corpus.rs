//! Replays every committed fuzz corpus file (fuzz/corpus/<target>/, seeds
//! and any crash found since) through the fuzz targets' own bodies, on
//! stable: a fuzzing regression test without a fuzzer.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
    println!("{target}: {n} inputs replayed");
}

#[test]
fn framer_corpus() {
    replay("framer", pear_server::fuzzing::framer_and_request);
}

#[test]
fn decode_corpus() {
    replay("decode", pear_server::fuzzing::decode);
}

#[test]
fn bundle_corpus() {
    replay("bundle", pear_server::fuzzing::bundle);
}
