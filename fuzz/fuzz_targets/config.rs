//! The config loader: any text parses or fails with a message; a parsed config either
//! validates or names the key at fault.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xferd::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text) {
        let _ = config.validate();
    }
});
