//! The v4 metadata section: who built the image, when, from what.
//!
//! It is the one section nitro-cli fills from the clock and the Docker daemon, which is why its
//! EIF bytes differ on every build while the PCRs do not (metadata is never measured). eifctl
//! writes it only from what the caller supplies, so identical inputs give identical bytes.

use serde::{Deserialize, Serialize};

/// `BuildMetadata`, field for field and in nitro-cli's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    #[serde(rename = "BuildTime")]
    pub build_time: String,
    #[serde(rename = "BuildTool")]
    pub build_tool: String,
    #[serde(rename = "BuildToolVersion")]
    pub build_tool_version: String,
    #[serde(rename = "OperatingSystem")]
    pub operating_system: String,
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
}

impl BuildInfo {
    /// Reads the operating system and kernel version from a kernel `.config` the way AWS's
    /// builder does: its third line reads like `# Linux/x86_64 4.14.177-104.253.amzn2 Kernel
    /// Configuration`, split on space, `/` and `-`, words 1 and 3.
    pub fn os_and_kernel_from_config(config: &str) -> (String, String) {
        let line = config.lines().nth(2).unwrap_or("");
        let words: Vec<&str> = line.split([' ', '/', '-']).collect();
        let word = |i: usize| words.get(i).map_or(UNKNOWN.to_string(), |w| w.to_string());
        (word(1), word(3))
    }
}

/// Formats a time as AWS's builder does (chrono's `to_rfc3339` in UTC), e.g.
/// `2024-01-01T00:00:00+00:00`, with fractional seconds only when there are some.
pub fn rfc3339_utc(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let frac = match t.nanosecond() {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What AWS's builder writes for a field it could not determine.
pub const UNKNOWN: &str = "Unknown";

/// The metadata section's JSON document (AWS's `EifIdentityInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(rename = "ImageName")]
    pub image_name: String,
    #[serde(rename = "ImageVersion")]
    pub image_version: String,
    #[serde(rename = "BuildMetadata")]
    pub build: BuildInfo,
    #[serde(rename = "DockerInfo")]
    pub docker_info: serde_json::Value,
    #[serde(rename = "CustomMetadata")]
    pub custom: serde_json::Value,
}

impl Metadata {
    /// Compact JSON, as AWS's builder writes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata is plain JSON")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Metadata, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_config_third_line_names_os_and_version() {
        let config = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86_64 4.14.177-104.253.amzn2.x86_64 Kernel Configuration\n";
        assert_eq!(
            BuildInfo::os_and_kernel_from_config(config),
            ("Linux".to_string(), "4.14.177".to_string())
        );
        assert_eq!(
            BuildInfo::os_and_kernel_from_config("short"),
            (UNKNOWN.to_string(), UNKNOWN.to_string())
        );
    }

    #[test]
    fn serializes_compact_in_nitro_cli_field_order() {
        let m = Metadata {
            image_name: "app".into(),
            image_version: "1.0".into(),
            build: BuildInfo {
                build_time: "2024-01-01T00:00:00+00:00".into(),
                build_tool: "eifctl".into(),
                build_tool_version: "0.1.0".into(),
                operating_system: "Linux".into(),
                kernel_version: "6.1".into(),
            },
            docker_info: serde_json::json!({}),
            custom: serde_json::Value::Null,
        };
        let s = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            s,
            r#"{"ImageName":"app","ImageVersion":"1.0","BuildMetadata":{"BuildTime":"2024-01-01T00:00:00+00:00","BuildTool":"eifctl","BuildToolVersion":"0.1.0","OperatingSystem":"Linux","KernelVersion":"6.1"},"DockerInfo":{},"CustomMetadata":null}"#
        );
        assert_eq!(Metadata::from_bytes(s.as_bytes()).unwrap(), m);
    }
}
