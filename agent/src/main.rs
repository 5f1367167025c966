use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use tracing_subscriber::EnvFilter;
use weft_agent::{
    agent,
    config::{Args, LogFormat},
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if weft_agent::inspect::wanted(&std::env::args().collect::<Vec<_>>()) {
        let tool = weft_agent::inspect::Tool::parse();
        return match weft_agent::inspect::run(tool) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft-agent: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if weft_agent::init::wanted(&std::env::args().collect::<Vec<_>>()) {
        let init = weft_agent::init::Init::parse();
        return match weft_agent::init::run(&init.command) {
            Ok(done) => {
                for line in done {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weft-agent: {:#}", anyhow::Error::from(e));
                ExitCode::FAILURE
            }
        };
    }
    if weft_agent::uninstall::wanted(&std::env::args().collect::<Vec<_>>()) {
        let u = weft_agent::uninstall::Uninstall::parse_from(std::env::args().skip(1));
        return match weft_agent::uninstall::run(&u).await {
            Ok(removed) if removed.is_empty() => {
                println!("nothing of weft's found on this node");
                ExitCode::SUCCESS
            }
            Ok(removed) => {
                for line in removed {
                    println!("removed {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weft-agent uninstall: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if weft_agent::allocator::wanted(&std::env::args().collect::<Vec<_>>()) {
        let args = weft_agent::allocator::AllocateArgs::parse_from(std::env::args().skip(1));
        init_logs(args.log_format);
        return match weft_agent::allocator::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("fatal: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse_from(weft_agent::compat::normalize(std::env::args_os()));
    init_logs(args.log_format);
    match agent::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, in the log's own format: a collector sees one event per failure.
            tracing::error!("fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}
