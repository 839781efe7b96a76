//! Feeds arbitrary bytes to the newc reader. It must never panic; whatever it accepts must
//! account for every input byte, and must survive a write/read round trip unchanged.

#![no_main]

use std::io::Read;

use eifctl::cpio::{Header, Reader, Writer, WriterOptions};
use libfuzzer_sys::fuzz_target;

type Entries = Vec<(Header, Vec<u8>)>;

fn read_all(bytes: &[u8]) -> Option<(Entries, u64)> {
    let mut reader = Reader::new(bytes);
    let mut entries = Vec::new();
    while let Some(mut entry) = reader.next_entry().ok()? {
        let mut data = Vec::new();
        entry.read_to_end(&mut data).ok()?;
        assert_eq!(data.len() as u64, u64::from(entry.header().filesize));
        entries.push((entry.header().clone(), data));
    }
    let end = reader.finish().ok()?;
    assert_eq!(end.trailer_end + end.trailing_len, bytes.len() as u64);
    assert!(end.trailer_offset < end.trailer_end);
    Some((entries, end.trailer_end))
}

fuzz_target!(|bytes: &[u8]| {
    let Some((entries, _)) = read_all(bytes) else {
        return;
    };
    let mut writer = Writer::new(Vec::new(), WriterOptions::default());
    for (header, data) in &entries {
        // Names with an interior NUL are readable but deliberately not writable.
        if writer.append(header, &data[..]).is_err() {
            assert!(header.name.contains(&0), "append refused {header:?}");
            return;
        }
    }
    let rewritten = writer.finish().expect("writing to a Vec cannot fail");
    let (again, _) = read_all(&rewritten).expect("the writer's output must read back");
    let expected: Entries = entries
        .into_iter()
        .map(|(header, data)| (Header { check: 0, ..header }, data))
        .collect();
    assert_eq!(again, expected);
});
