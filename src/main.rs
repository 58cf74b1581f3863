//! `pear-server`: start the server from a config file.

use clap::Parser;
use pear_server::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

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

fn main() -> ExitCode {
    pear_server::model::cpu::single_threaded_candle_ops();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pear-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = args.port {
        config.server.port = p;
    }
    let device = candle_core::Device::Cpu;
    let server = match pear_server::server::start(config, device) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pear-server: {e}");
            return ExitCode::from(1);
        }
    };
    match server.local_addr() {
        // Tests and scripts read this line to find the port.
        Ok(a) => println!("pear-server listening on {a}"),
        Err(e) => {
            eprintln!("pear-server: {e}");
            return ExitCode::from(1);
        }
    }
    let addr = server.local_addr().ok();
    let shared = server.shared();
    if let Some(listen) = shared.config.metrics.listen.clone() {
        match pear_server::server::metrics_http::start(&listen, shared.clone()) {
            Ok(a) => println!("pear-server metrics on http://{a}"),
            Err(e) => {
                eprintln!("pear-server: metrics: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // Model loaded, sockets bound: tell systemd (Type=notify) we are ready.
    if let Some(a) = addr {
        pear_server::server::systemd::ready(a, shared.shutdown.clone());
    }
    let (first, second) = (server.shared(), server.shared());
    let signals = pear_server::server::shutdown::on_signals(
        move || {
            pear_server::server::systemd::stopping();
            first.shutdown.begin();
            if let Some(a) = addr {
                pear_server::server::shutdown::wake(a);
            }
        },
        move || {
            second.remove_partial_downloads();
            std::process::exit(130);
        },
    );
    if let Err(e) = signals {
        eprintln!("pear-server: cannot handle signals: {e}");
        return ExitCode::from(1);
    }
    let shared = server.run();
    let timeout = std::time::Duration::from_secs(shared.config.server.drain_timeout_secs);
    let drained = pear_server::server::shutdown::drain(&shared, timeout);
    if drained {
        log::info!("drained: every request received was answered; exiting");
    } else {
        // Images still queued are answered "shutting down" rather than dropped;
        // only an image already running, or a download, is still waited for (briefly).
        log::warn!("drain not finished after {} s (server.drain_timeout_secs); answering the rest as shutting down", timeout.as_secs());
        shared.shutdown.stop();
        if !pear_server::server::shutdown::drain(&shared, std::time::Duration::from_secs(5)) {
            log::warn!("exiting with connections still open");
        }
    }
    shared.remove_partial_downloads();
    ExitCode::SUCCESS
}
