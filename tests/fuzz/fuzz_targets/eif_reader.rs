//! Feeds arbitrary bytes to the EIF reader and everything `describe` does after it (scan,
//! metadata, signature section). It must never panic; whatever it accepts must be laid out
//! back to back from the header to the end of the file.

#![no_main]

use eifctl::eif::{EifFile, HEADER_LEN, SECTION_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The reader works on files (it reads by offset); tmpfs keeps this cheap.
    let path = std::env::temp_dir().join(format!("eifctl-fuzz-{}.eif", std::process::id()));
    std::fs::write(&path, bytes).expect("writing the fuzz input");
    let Ok(eif) = EifFile::open(&path) else {
        return;
    };
    let mut pos = HEADER_LEN as u64;
    for s in eif.sections() {
        assert_eq!(s.header_offset, pos);
        assert_eq!(s.offset, pos + SECTION_HEADER_LEN as u64);
        pos = s.offset + s.size;
    }
    assert_eq!(pos, bytes.len() as u64);
    let _ = eifctl::describe::describe(&eif);
    let _ = eifctl::describe::describe_scan(&eif, true);
});
