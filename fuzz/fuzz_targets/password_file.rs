//! The password-file parser: any content loads or is refused with an error naming the
//! file, never a panic.
#![no_main]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use libfuzzer_sys::fuzz_target;
use xferd::accounts::PasswordFile;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write");
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let _ = PasswordFile::load(file.path());
});
