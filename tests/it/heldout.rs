//! Accuracy floor of the shipped default model on a small held-out sample
//! (tools/synth_pears.py, seed 1001, never used in training), through the
//! Rust pipeline. Floors sit a little under the measured figures, so a
//! regression in the model code or the weights is caught. The full held-out
//! measurement (500 images) is `pear-eval`, see the README.

use pear_model::decode::decode_image;
use pear_model::pipeline::Pipeline;
use std::path::Path;

#[test]
fn default_model_accuracy_floor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/fixtures/heldout");
    let p = Pipeline::load(&root.join("weights/pear-default.safetensors"), &candle_core::Device::Cpu, Some(0.5)).unwrap();
    let csv = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    let (mut with, mut found, mut correct, mut without, mut clean) = (0, 0, 0, 0, 0);
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (class, pears): (i64, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        let img = decode_image(&std::fs::read(dir.join(f[0])).unwrap(), &Default::default()).unwrap();
        let got = p.inspect(&img).unwrap().class;
        if class >= 0 {
            with += 1;
            found += usize::from(got.is_some());
            correct += usize::from(got == Some(class as usize));
        } else if pears == 0 {
            without += 1;
            clean += usize::from(got.is_none());
        }
    }
    println!("held-out sample: found {found}/{with}, classes {correct}/{with}, no-pear {clean}/{without}");
    assert!(with >= 40 && without >= 4, "sample too small: {with} with fruit, {without} without");
    assert!(found as f64 >= 0.97 * with as f64, "pear found in {found}/{with}");
    assert!(correct as f64 >= 0.90 * with as f64, "class correct in {correct}/{with}");
    assert!(clean as f64 >= 0.75 * without as f64, "no pear reported in {clean}/{without}");
}
