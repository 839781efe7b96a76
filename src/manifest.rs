//! `pcr-values.json`: the measurements of a release and every input needed to reproduce them.
//!
//! It is the document that gets signed, so its bytes must be a function of its content alone:
//! canonical JSON (keys sorted at every level, two-space indent, a trailing newline, lowercase
//! hex). A verifier can then re-serialize what it parsed and refuse anything that is not byte
//! for byte what eifctl would have written. Its JSON Schema is `docs/pcr-values.schema.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pcr::Pcr;

/// The schema identifier this version writes.
pub const SCHEMA: &str = "eifctl/pcr-values/v1";
/// The platform these measurements are for.
pub const PLATFORM: &str = "aws-nitro";

/// The whole document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    pub version: String,
    pub platform: String,
    pub arch: String,
    /// False when the build had no boot blobs: PCR0 and PCR1 are then absent and the manifest
    /// cannot be signed or published.
    pub complete: bool,
    /// PCR index ("0", "1", "2", "8") to value.
    pub pcrs: BTreeMap<String, Pcr>,
    pub enclave_config: EnclaveConfig,
    /// The day of `source_date_epoch`, as the hand-written manifests had it.
    pub build_date: String,
    /// The recommended parent instance type, if the recipe names one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub instance_type: Option<String>,
    pub docker_image: DockerImage,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eif: Option<EifFacts>,
    pub inputs: Inputs,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfig {
    pub memory_mib: u64,
    pub cpu_count: u64,
    /// Always false: a debug-mode enclave reports all-zero PCRs, so these values are for
    /// production runs only.
    pub debug_mode: bool,
}

/// The normalized image the EIF was made from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DockerImage {
    pub name: String,
    pub tag: String,
    /// The normalized image ID (sha256 of its config).
    pub digest: String,
    /// File name of the docker-archive next to the manifest.
    pub archive: String,
    pub archive_sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EifFacts {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub sha384: String,
}

/// What a verifier needs to rebuild.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    pub source: Source,
    pub bases: BTreeMap<String, Base>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub blobs: Option<Blobs>,
    pub source_date_epoch: u64,
    pub context_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prepared_sha256: Option<String>,
    pub eifctl_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The recipe directory, relative to the repository root.
    pub path: String,
    /// The commit checked out when building.
    pub revision: String,
    /// The git tree hash of the recipe directory as built (equal to the commit's when clean).
    pub tree: String,
    /// True when the recipe directory differed from the commit.
    pub dirty: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub image_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub registry_digest: Option<String>,
    pub spec: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Blobs {
    pub kernel_sha384: String,
    pub init_sha384: String,
    pub nsm_sha384: String,
    pub cmdline: String,
}

/// Why bytes are not a usable manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a pcr-values.json: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("schema {0:?} is not {SCHEMA}")]
    Schema(String),
    #[error(
        "not canonical (keys sorted, two-space indent, trailing newline, lowercase hex): re-write it with eifctl, do not edit by hand"
    )]
    NotCanonical,
    #[error("incomplete: {0}")]
    Incomplete(String),
}

impl Manifest {
    /// The canonical bytes.
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).expect("the manifest is plain data"))
    }

    /// Parses a manifest and insists that it is canonical, so that what is verified is what
    /// was signed.
    pub fn from_canonical(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Parse)?;
        if m.schema != SCHEMA {
            return Err(ManifestError::Schema(m.schema));
        }
        if m.to_canonical() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(m)
    }

    /// Refuses a manifest that cannot be signed: no PCR0 or PCR1, or marked incomplete.
    pub fn require_complete(&self) -> Result<(), ManifestError> {
        for idx in ["0", "1", "2"] {
            if !self.pcrs.contains_key(idx) {
                return Err(ManifestError::Incomplete(format!(
                    "no PCR{idx} (built without boot blobs?)"
                )));
            }
        }
        if !self.complete || self.eif.is_none() {
            return Err(ManifestError::Incomplete(
                "marked incomplete: rebuild with the boot blobs".into(),
            ));
        }
        Ok(())
    }
}

/// Canonical JSON: object keys sorted bytewise at every level, two-space indent, `\n` at the end.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&sorted(value)).expect("JSON values serialize");
    out.push(b'\n');
    out
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            let mut out = serde_json::Map::new();
            for (k, v) in ordered {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The UTC day of a Unix time, `YYYY-MM-DD`.
pub fn build_date(source_date_epoch: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(source_date_epoch as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let pcr = |b: &[u8]| Pcr::of_bytes(b);
        Manifest {
            schema: SCHEMA.into(),
            name: "hello".into(),
            version: "0.1.0".into(),
            platform: PLATFORM.into(),
            arch: "x86_64".into(),
            complete: true,
            pcrs: [("0", pcr(b"0")), ("1", pcr(b"1")), ("2", pcr(b"2"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            enclave_config: EnclaveConfig {
                memory_mib: 512,
                cpu_count: 2,
                debug_mode: false,
            },
            build_date: build_date(1_700_000_000),
            instance_type: Some("c5.xlarge".into()),
            docker_image: DockerImage {
                name: "hello".into(),
                tag: "0.1.0".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                archive: "image.tar".into(),
                archive_sha256: "b".repeat(64),
            },
            eif: Some(EifFacts {
                file: "hello.eif".into(),
                size: 1234,
                sha256: "c".repeat(64),
                sha384: "d".repeat(96),
            }),
            inputs: Inputs {
                source: Source {
                    path: "recipes/hello".into(),
                    revision: "e".repeat(40),
                    tree: "f".repeat(40),
                    dirty: false,
                },
                bases: [(
                    "builder".to_string(),
                    Base {
                        image_id: format!("sha256:{}", "1".repeat(64)),
                        registry_digest: None,
                        spec: "2".repeat(64),
                    },
                )]
                .into_iter()
                .collect(),
                blobs: Some(Blobs {
                    kernel_sha384: "3".repeat(96),
                    init_sha384: "4".repeat(96),
                    nsm_sha384: "5".repeat(96),
                    cmdline: "console=ttyS0".into(),
                }),
                source_date_epoch: 1_700_000_000,
                context_sha256: "6".repeat(64),
                prepared_sha256: None,
                eifctl_version: "0.1.0".into(),
            },
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_indent_two_and_end_in_newline() {
        let bytes = sample().to_canonical();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("{\n  \"arch\": \"x86_64\",\n  \"build_date\": \"2023-11-14\",\n"),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        assert_eq!(Manifest::from_canonical(&bytes).unwrap(), sample());
    }

    #[test]
    fn edited_or_reformatted_manifests_are_refused() {
        let bytes = sample().to_canonical();
        let compact =
            serde_json::to_vec(&serde_json::from_slice::<Value>(&bytes).unwrap()).unwrap();
        assert!(matches!(
            Manifest::from_canonical(&compact),
            Err(ManifestError::NotCanonical)
        ));
        let upper = String::from_utf8(bytes.clone()).unwrap().to_uppercase();
        assert!(Manifest::from_canonical(upper.as_bytes()).is_err());
        let mut extra: Value = serde_json::from_slice(&bytes).unwrap();
        extra["note"] = Value::String("hi".into());
        assert!(matches!(
            Manifest::from_canonical(&canonical_json(&extra)),
            Err(ManifestError::Parse(_))
        ));
    }

    #[test]
    fn the_json_schema_in_the_repository_accepts_what_eifctl_writes() {
        let schema: Value =
            serde_json::from_str(include_str!("../docs/pcr-values.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let doc: Value = serde_json::from_slice(&sample().to_canonical()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut incomplete = sample();
        incomplete.complete = false;
        incomplete.eif = None;
        incomplete.pcrs.remove("0");
        incomplete.pcrs.remove("1");
        let doc: Value = serde_json::from_slice(&incomplete.to_canonical()).unwrap();
        assert!(validator.is_valid(&doc));
        let mut bad = doc.clone();
        bad["complete"] = Value::Bool(true);
        assert!(
            !validator.is_valid(&bad),
            "a complete manifest needs PCR0, PCR1 and the EIF"
        );
    }

    #[test]
    fn a_manifest_without_pcr0_is_incomplete() {
        let mut m = sample();
        m.pcrs.remove("0");
        assert!(matches!(
            m.require_complete(),
            Err(ManifestError::Incomplete(_))
        ));
        assert!(sample().require_complete().is_ok());
    }
}
