//! Feeds arbitrary bytes to the customer-ramdisk conversion as the `docker export` tar. It must
//! never panic; whatever it accepts must be a newc archive that reads back, padded to 512, with
//! linuxkit's fixed head (`rootfs`) and tail (`files:` entries, `cmd`, `env`).

#![no_main]

use std::io::Read;

use eifctl::cpio::Reader;
use eifctl::ramdisk::{Command, CustomerStats, write_customer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let command = Command {
        cmd: vec!["/bin/app".into()],
        env: vec!["A=1".into()],
    };
    let Ok((out, stats)) = write_customer(bytes, &command, Vec::new()) else {
        return;
    };
    check(&out, &stats);
});

fn check(out: &[u8], stats: &CustomerStats) {
    assert_eq!(out.len() % 512, 0);
    let mut reader = Reader::new(out);
    let mut names = Vec::new();
    let mut ino = 721;
    while let Some(mut entry) = reader.next_entry().expect("output must read back") {
        assert_eq!(entry.header().ino, ino);
        ino += 1;
        names.push(entry.header().name.clone());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
    }
    reader.finish().expect("trailer and padding");
    assert_eq!(names.len() as u64, stats.cpio_entries);
    assert_eq!(names.first().map(Vec::as_slice), Some(&b"rootfs"[..]));
    assert_eq!(names.last().map(Vec::as_slice), Some(&b"env"[..]));
    for name in &names[..names.len() - 2] {
        assert!(name.starts_with(b"rootfs"), "{:?}", String::from_utf8_lossy(name));
    }
}
