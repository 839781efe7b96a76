//! `eifctl build`: a recipe into `out/<name>/<version>/`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use eifctl::build::{BuildError, BuildRequest, EifBuilderKind, build};
use eifctl::docker::{BuildEvent, DockerError};

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// Build a recipe: pinned bases, the Dockerfile build (no network), the normalized image, the
/// EIF and `pcr-values.json`, into out/<name>/<version>/.
///
/// The lock (`eifctl lock`) must match the recipe and its inputs; a stale lock is refused with
/// what changed. Without boot blobs the build still produces the normalized image and PCR2, and
/// marks the manifest incomplete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe directory (holding recipe.toml and recipe.lock).
    pub recipe: PathBuf,
    /// Where builds land: <out>/<name>/<version>/.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Boot blob directory. Default: NITRO_CLI_BLOBS, else /usr/share/nitro_enclaves/blobs.
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
    /// Build every Dockerfile step again instead of using the daemon's cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Who makes the EIF from the normalized image: eifctl itself, or nitro-cli.
    #[arg(long, value_enum, default_value = "eifctl")]
    pub eif_builder: Builder,
    /// The nitro-cli executable for --eif-builder nitro-cli and --cross-check.
    #[arg(long, value_name = "PATH", default_value = "nitro-cli")]
    pub nitro_cli: PathBuf,
    /// Build the EIF both ways and fail (exit 1) on any PCR difference.
    #[arg(long)]
    pub cross_check: bool,
    /// Print the manifest (pcr-values.json) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Builder {
    Eifctl,
    NitroCli,
}

pub fn run(args: Args) -> Result<Outcome, Failure> {
    let rt = super::runtime()?;
    let docker = rt
        .block_on(eifctl::docker::connect())
        .map_err(|e| Failure::environment(one_line(&e)))?;
    let req = BuildRequest {
        recipe_dir: args.recipe.clone(),
        out_root: args.out.clone(),
        blobs: args.blobs.clone(),
        no_cache: args.no_cache,
        eif_builder: match args.eif_builder {
            Builder::Eifctl => EifBuilderKind::Native,
            Builder::NitroCli => EifBuilderKind::NitroCli(args.nitro_cli.clone()),
        },
        cross_check: args.cross_check.then(|| args.nitro_cli.clone()),
        source_date_epoch: None,
    };
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let spinner = tty.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let say = |line: &str| match &spinner {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    };
    let mut on_event = |event: BuildEvent| match event {
        BuildEvent::Step { n, m, text } => {
            let line = format!(
                "[{:>5.1}s] step {n}/{m}: {text}",
                started.elapsed().as_secs_f64()
            );
            match &spinner {
                Some(bar) => bar.set_message(line),
                None => eprintln!("{line}"),
            }
        }
        BuildEvent::Output(line) => {
            if spinner.is_none() {
                eprintln!("    {line}");
            }
        }
    };
    let result = build(&rt, &docker, &req, &say, &mut on_event);
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    let built = result.map_err(failure)?;
    for note in &built.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "Built {} {} in {:.1}s: {}",
        built.manifest.name,
        built.manifest.version,
        started.elapsed().as_secs_f64(),
        built.dir.display()
    );
    for (idx, pcr) in &built.manifest.pcrs {
        eprintln!("  PCR{idx}  {pcr}");
    }
    if args.json {
        print!(
            "{}",
            String::from_utf8_lossy(&built.manifest.to_canonical())
        );
    }
    Ok(Outcome::Ok)
}

pub fn failure(e: BuildError) -> Failure {
    match &e {
        BuildError::CrossCheck(_) => Failure {
            code: 1,
            message: one_line(&e),
        },
        BuildError::Docker(DockerError::ImageNotFound { .. } | DockerError::BuildFailed { .. }) => {
            Failure::input(one_line(&e))
        }
        BuildError::Docker(_) | BuildError::Blob(_) | BuildError::Io { .. } => {
            Failure::environment(one_line(&e))
        }
        _ => Failure::input(one_line(&e)),
    }
}
