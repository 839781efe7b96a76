//! One module per subcommand.

pub mod assemble;
pub mod blobs;
pub mod describe;
pub mod diff;
pub mod pcr;

/// Prints a JSON value the way nitro-cli does: pretty, two-space indent, trailing newline.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}
