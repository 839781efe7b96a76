//! The `eifctl` command line: parses arguments, runs one subcommand, maps the outcome to an exit
//! code. All the work happens in the library; each subcommand lives in its own file.

mod cmd;
mod failure;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Reproducible AWS Nitro Enclave images and their signed measurements.
///
/// Exit codes: 0 success; 1 checked and it does not match; 2 usage or input error;
/// 3 environment error (no Docker, no key, no token, network, cannot write).
#[derive(Debug, Parser)]
#[command(name = "eifctl", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Describe(cmd::describe::Args),
    Assemble(Box<cmd::assemble::Args>),
    BuildEnclave(Box<cmd::build_enclave::Args>),
    Build(Box<cmd::build::Args>),
    Lock(cmd::lock::Args),
    Pcr(cmd::pcr::Args),
    Diff(cmd::diff::Args),
    Publish(Box<cmd::publish::Args>),
    Record(cmd::publish::RecordArgs),
    #[command(subcommand)]
    Blobs(cmd::blobs::Command),
    #[command(subcommand)]
    Key(cmd::key::Command),
    Sign(cmd::sign::Args),
    VerifySignature(cmd::verify_signature::Args),
    Verify(Box<cmd::verify::Args>),
    #[command(subcommand)]
    Attest(cmd::attest::Command),
}

/// What a subcommand reports when it ran to the end: success, or a checked mismatch.
pub enum Outcome {
    Ok,
    Mismatch,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Describe(a) => cmd::describe::run(a),
        Command::Assemble(a) => cmd::assemble::run(*a),
        Command::BuildEnclave(a) => cmd::build_enclave::run(*a),
        Command::Build(a) => cmd::build::run(*a),
        Command::Lock(a) => cmd::lock::run(a),
        Command::Pcr(a) => cmd::pcr::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::Publish(a) => cmd::publish::run(*a),
        Command::Record(a) => cmd::publish::run_record(a),
        Command::Blobs(c) => cmd::blobs::run(c),
        Command::Key(c) => cmd::key::run(c),
        Command::Sign(a) => cmd::sign::run(a),
        Command::VerifySignature(a) => cmd::verify_signature::run(a),
        Command::Verify(a) => cmd::verify::run(*a),
        Command::Attest(c) => cmd::attest::run(c),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Mismatch) => ExitCode::from(1),
        Err(f) => {
            eprintln!("eifctl: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
