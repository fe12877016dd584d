//! Path validation: whatever a peer sends, an accepted path stays beneath the home, is
//! in NFC, holds no invisible character, and validates again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xfer_proto::text::{first_invisible, nfc};
use xferd::storage::RelPath;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = RelPath::parse(s) {
        let text = p.as_str();
        assert!(!text.starts_with('/'), "absolute path accepted: {text:?}");
        assert!(!text.contains('\0') && !text.contains('\\'));
        assert_eq!(first_invisible(text), None, "invisible character in {text:?}");
        assert_eq!(*nfc(text), *text, "not NFC: {text:?}");
        assert_eq!(RelPath::parse(text).as_ref(), Ok(&p), "not stable: {text:?}");
        for name in text.split('/').filter(|_| !p.is_home()) {
            assert!(
                !name.is_empty() && name != "." && name != "..",
                "path escapes or is not normal: {text:?}"
            );
        }
    }
    let _ = RelPath::parse_entry(s);
});
