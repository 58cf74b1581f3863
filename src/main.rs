//! `pear-server`: start the server from a config file, serve until
//! SIGTERM/SIGINT, drain, exit.

use clap::Parser;
use pear_server::config::Config;
use pear_server::server::{metrics_http, systemd};
use pear_server::shutdown;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// TCP inference server that inspects pears (YOLOv8 + EfficientNet, candle).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = "server.toml")]
    config: PathBuf,
    /// Listen on this port instead of the config's `server.port` (0 = any free port).
    #[arg(long)]
    port: Option<u16>,
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("pear-server: {e}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    pear_model::cpu::single_threaded_candle_ops();
    pear_model::cpu::keep_freed_memory();
    // A file-size limit (ulimit -f) reached by the journal must fail that
    // write, which the journal counts, not kill the server (SIGXFSZ's default).
    // SAFETY: setting a signal's disposition to SIG_IGN, before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // A SIMD level this CPU lacks, or a typo, is refused before anything loads.
    match pear_model::simd::Simd::from_env() {
        Ok(simd) => log::info!("kernels run at SIMD level {simd} (this CPU's best: {})", pear_model::simd::Simd::detected()),
        Err(e) => return fail(2, e),
    }
    let args = Args::parse();
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    if let Some(p) = args.port {
        config.server.port = p;
    }
    let server = match pear_server::server::start(config) {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    let addr = match server.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(1, e),
    };
    // Tests and scripts read this line to find the port.
    println!("pear-server listening on {addr}");
    let (state, signal) = (server.state(), server.shutdown());
    if let Some(listen) = state.config.metrics.listen.clone() {
        match metrics_http::start(&listen, state.clone(), signal.clone()) {
            Ok(a) => println!("pear-server metrics on http://{a}"),
            Err(e) => return fail(1, format!("metrics: {e}")),
        }
    }
    // Model loaded, sockets bound: tell systemd (Type=notify) we are ready.
    systemd::ready(addr, signal.clone());
    let first = signal.clone();
    let for_exit = state.clone();
    let signals = shutdown::on_signals(
        move || {
            systemd::stopping();
            first.begin();
        },
        move || {
            for_exit.downloads.remove_partial();
            std::process::exit(130);
        },
    );
    if let Err(e) = signals {
        return fail(1, format!("cannot handle signals: {e}"));
    }
    let drain = server.run();
    let timeout = Duration::from_secs(drain.state.config.server.drain_timeout_secs);
    if drain.finish(timeout) {
        log::info!("drained: every request received was answered; exiting");
    }
    ExitCode::SUCCESS
}
