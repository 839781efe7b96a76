//! `eifctl key`: make a release-signing key, export its public certificate; and the passphrase
//! handling that `eifctl sign` shares.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eifctl::openpgp;

use crate::Outcome;
use crate::failure::{Failure, one_line};

/// The environment variable a key's passphrase may come from.
pub const PASSPHRASE_ENV: &str = "EIFCTL_KEY_PASSPHRASE";

/// Release-signing OpenPGP keys: make one, export its public certificate.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Generate(GenerateArgs),
    Export(ExportArgs),
}

/// Make an Ed25519 OpenPGP signing key (v4, RFC 4880: GnuPG 2.2 verifies its signatures).
///
/// Writes DIR/signing-key.asc (the secret key, mode 0600), DIR/signing-key.pub.asc (the public
/// certificate, for keys/) and DIR/signing-key.rev.asc (its revocation certificate, mode 0600,
/// to publish when the key leaves). Refuses to replace any existing file.
///
/// The secret key is encrypted with a passphrase from --passphrase-file, else from
/// EIFCTL_KEY_PASSPHRASE, else typed twice at the terminal. Without any of them the command
/// fails, unless --no-passphrase asks for an unencrypted key on purpose (for a CI secret).
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The user ID, e.g. "Release signing <releases@example.org>".
    #[arg(long)]
    pub userid: String,
    /// The directory to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A file whose first line is the passphrase.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Leave the secret key unencrypted.
    #[arg(long, conflicts_with = "passphrase_file")]
    pub no_passphrase: bool,
    /// Make the key expire after this many days (default: no expiry).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub validity_days: Option<u32>,
}

/// Print (or write) the public certificate of a key: what goes into keys/.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The secret key (or certificate) file, armored or binary.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Write the armored certificate here instead of to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: Command) -> Result<Outcome, Failure> {
    match cmd {
        Command::Generate(a) => generate(a),
        Command::Export(a) => export(a),
    }
}

/// The file names `key generate` writes.
pub const SECRET_FILE: &str = "signing-key.asc";
pub const PUBLIC_FILE: &str = "signing-key.pub.asc";
pub const REVOCATION_FILE: &str = "signing-key.rev.asc";

fn generate(args: GenerateArgs) -> Result<Outcome, Failure> {
    let files = [SECRET_FILE, PUBLIC_FILE, REVOCATION_FILE].map(|f| args.out.join(f));
    for f in &files {
        if f.exists() {
            return Err(Failure::input(format!(
                "{}: exists; refusing to overwrite a key",
                f.display()
            )));
        }
    }
    let passphrase = new_passphrase(args.passphrase_file.as_deref(), args.no_passphrase)?;
    let validity = args
        .validity_days
        .map(|d| Duration::from_secs(u64::from(d) * 86_400));
    let key = openpgp::generate_key(&args.userid, passphrase.as_deref(), validity)
        .map_err(|e| Failure::input(format!("--userid: {}", one_line(&e))))?;

    if !args.out.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.out)
            .map_err(|e| Failure::environment(format!("{}: {e}", args.out.display())))?;
    }
    let contents = [
        (&key.secret_armored, 0o600),
        (&key.public_armored, 0o644),
        (&key.revocation_armored, 0o600),
    ];
    for (i, (path, (text, mode))) in files.iter().zip(contents).enumerate() {
        if let Err(e) = eifctl::atomic::write_new_file(path, text.as_bytes(), mode) {
            for written in &files[..i] {
                let _ = std::fs::remove_file(written);
            }
            return Err(Failure::environment(format!("{}: {e}", path.display())));
        }
    }
    eprintln!(
        "eifctl: key {} ({}){}: secret key {}, certificate {}, revocation {}",
        key.fingerprint,
        args.userid,
        if passphrase.is_some() {
            ""
        } else {
            ", NOT encrypted"
        },
        files[0].display(),
        files[1].display(),
        files[2].display()
    );
    println!("{}", key.fingerprint);
    Ok(Outcome::Ok)
}

fn export(args: ExportArgs) -> Result<Outcome, Failure> {
    let bytes = std::fs::read(&args.key)
        .map_err(|e| Failure::input(format!("{}: {e}", args.key.display())))?;
    let cert = openpgp::public_cert(&bytes)
        .map_err(|e| Failure::input(format!("{}: {}", args.key.display(), one_line(&e))))?;
    match &args.out {
        Some(out) => eifctl::atomic::write_file(out, cert.as_bytes())
            .map_err(|e| Failure::environment(format!("{}: {e}", out.display())))?,
        None => print!("{cert}"),
    }
    Ok(Outcome::Ok)
}

/// The first line of a passphrase file.
fn passphrase_from_file(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("--passphrase-file {}: {e}", path.display())))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(Failure::input(format!(
            "--passphrase-file {}: the first line is empty",
            path.display()
        )));
    }
    Ok(line)
}

fn passphrase_from_env() -> Result<Option<String>, Failure> {
    match std::env::var(PASSPHRASE_ENV) {
        Ok(v) if v.is_empty() => Err(Failure::input(format!("{PASSPHRASE_ENV} is set but empty"))),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(Failure::input(format!("{PASSPHRASE_ENV}: {e}"))),
    }
}

fn prompt(text: &str) -> Result<String, Failure> {
    rpassword::prompt_password(text)
        .map_err(|e| Failure::environment(format!("reading the passphrase from the terminal: {e}")))
}

/// The passphrase for a new key: file, environment, or typed twice; None only when asked for.
fn new_passphrase(file: Option<&Path>, no_passphrase: bool) -> Result<Option<String>, Failure> {
    let env = passphrase_from_env()?;
    if no_passphrase {
        if env.is_some() {
            return Err(Failure::input(format!(
                "--no-passphrase, but {PASSPHRASE_ENV} is set: say which you mean"
            )));
        }
        return Ok(None);
    }
    if let Some(f) = file {
        return passphrase_from_file(f).map(Some);
    }
    if let Some(p) = env {
        return Ok(Some(p));
    }
    if std::io::stdin().is_terminal() {
        let first = prompt("Passphrase for the new key: ")?;
        if first.is_empty() {
            return Err(Failure::input(
                "empty passphrase: type one, or use --no-passphrase for an unencrypted key",
            ));
        }
        let second = prompt("The same passphrase again: ")?;
        if first != second {
            return Err(Failure::input("the two passphrases differ"));
        }
        return Ok(Some(first));
    }
    Err(Failure::input(format!(
        "no passphrase: give --passphrase-file FILE, set {PASSPHRASE_ENV}, run on a terminal, or use --no-passphrase for an unencrypted key"
    )))
}

/// The passphrase to unlock an existing key that needs one: file, environment, or typed once.
pub fn existing_passphrase(file: Option<&Path>, fingerprint: &str) -> Result<String, Failure> {
    if let Some(f) = file {
        return passphrase_from_file(f);
    }
    if let Some(p) = passphrase_from_env()? {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("Passphrase for key {fingerprint}: "));
    }
    Err(Failure::environment(format!(
        "key {fingerprint} is encrypted and no passphrase was given: set {PASSPHRASE_ENV} or give --passphrase-file FILE"
    )))
}
