//! loopctl: the agent-loop command-line client. Parses arguments, talks to loopd through
//! `loop_http::Client`, renders, and maps every failure to one documented exit code.

mod cli;
mod commands;
mod exit;
mod render;
mod render_review;

use clap::Parser;

fn main() {
    let code = match cli::Cli::try_parse() {
        Ok(cli) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(commands::dispatch(cli)),
            Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
        },
        Err(e) => {
            // Help and version are not errors.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(exit::report(code));
}
