//! `pear-eval`: accuracy of a model bundle on a labelled folder, through the
//! same Rust pipeline the server runs.
//!
//!     cargo run --release --bin pear-eval -- --model weights/pear-default.safetensors --data DIR
//!
//! DIR holds `labels.csv` (file,class,pears,...) as written by
//! tools/synth_pears.py, and the images in DIR/images or DIR itself.
//! class -1 with pears 0 is an image without fruit; class >= 0 has a main fruit.

use clap::Parser;
use pear_model::decode::decode_image;
use pear_model::pipeline::Pipeline;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Accuracy of a model bundle on a labelled image folder")]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// Detector confidence threshold (default: the bundle's).
    #[arg(long)]
    threshold: Option<f32>,
    /// Print every misjudged image.
    #[arg(long)]
    verbose: bool,
    /// Also print found / no-pear rates for thresholds 0.3..0.9 (run with a low --threshold).
    #[arg(long)]
    sweep: bool,
}

fn main() {
    pear_model::cpu::keep_freed_memory();
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("pear-eval: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let p = Pipeline::load(&a.model, &candle_core::Device::Cpu, a.threshold)?;
    let csv = std::fs::read_to_string(a.data.join("labels.csv"))?;
    let img_dir = if a.data.join("images").is_dir() { a.data.join("images") } else { a.data.clone() };
    let n_cls = p.meta.classifier.class_names.len();
    let mut confusion = vec![vec![0usize; n_cls + 1]; n_cls];
    let (mut with, mut found, mut without, mut clean, mut correct) = (0, 0, 0, 0, 0);
    let t = Instant::now();
    let mut n = 0;
    // best fruit score per image (None: no fruit box at the run's threshold), for --sweep
    let (mut scores_with, mut scores_without) = (Vec::new(), Vec::new());
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 3 {
            continue;
        }
        let (file, class, pears): (&str, i64, usize) = (f[0], f[1].parse()?, f[2].parse()?);
        let img = decode_image(&std::fs::read(img_dir.join(file))?, &Default::default())?;
        let ins = p.inspect(&img)?;
        n += 1;
        if class >= 0 {
            scores_with.push(ins.detection_score);
            with += 1;
            let col = ins.class.unwrap_or(n_cls);
            confusion[class as usize][col] += 1;
            if ins.class.is_some() {
                found += 1;
            }
            if ins.class == Some(class as usize) {
                correct += 1;
            } else if a.verbose {
                println!("{file}: true {class}, got {:?}", ins.class);
            }
        } else if pears == 0 {
            scores_without.push(ins.detection_score);
            without += 1;
            if ins.class.is_none() {
                clean += 1;
            } else if a.verbose {
                println!("{file}: no fruit, got {:?} (score {:?})", ins.class, ins.detection_score);
            }
        }
    }
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    println!("images: {n} ({:.1} ms each)", t.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64);
    println!("pear found:      {found}/{with} = {:.2} %", pct(found, with));
    println!("no pear correct: {clean}/{without} = {:.2} %", pct(clean, without));
    println!("class accuracy:  {correct}/{with} = {:.2} %", pct(correct, with));
    if a.sweep {
        for th in [0.3f32, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] {
            let f = scores_with.iter().filter(|s| s.is_some_and(|s| s >= th)).count();
            let c = scores_without.iter().filter(|s| !s.is_some_and(|s| s >= th)).count();
            println!("threshold {th:.1}: pear found {:.2} %, no pear correct {:.2} %", pct(f, with), pct(c, without));
        }
    }
    println!("confusion (rows: true class, last column: not found):");
    for (i, row) in confusion.iter().enumerate() {
        println!("  {:>14} {:?}", p.meta.classifier.class_names[i], row);
    }
    Ok(())
}
