//! Names stored before paths were normalised to NFC (a macOS client writes `é` as `e` +
//! U+0301) could no longer be named: every path that arrives is NFC now, and listings
//! skip names that are not. When a user's space is first opened, such names are renamed
//! to their NFC form, so what was stored stays reachable; a name whose NFC form is taken
//! already, or that holds an invisible character, is left alone and logged for the
//! administrator to rename.

use cap_std::fs::Dir;
use tracing::{info, warn};
use xfer_proto::text::{first_invisible, nfc};

/// How deep the walk goes; deeper trees are not renamed (and logged).
const MAX_DEPTH: usize = 64;

/// Renames every name beneath `dir` that is not NFC to its NFC form, where free.
pub(crate) fn renormalize(user: &str, dir: &Dir) {
    walk(user, dir, "", 0);
}

fn walk(user: &str, dir: &Dir, shown: &str, depth: usize) {
    if depth > MAX_DEPTH {
        warn!(
            user,
            path = shown,
            "names below this depth were not checked for NFC"
        );
        return;
    }
    let Ok(entries) = dir.entries() else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let mut current = name.clone();
        let composed = nfc(&name);
        if *composed != *name {
            let path = format!("{shown}{name}");
            if first_invisible(&name).is_some() {
                warn!(user, path = ?path, "a stored name holds an invisible character; rename it on the server");
            } else if dir.symlink_metadata(&*composed).is_ok() {
                warn!(user, path = ?path, "a stored name is not NFC and its NFC form is taken; rename it on the server");
            } else if let Err(e) = dir.rename(&name, dir, &*composed) {
                warn!(user, path = ?path, error = %e, "renaming a stored name to NFC failed");
            } else {
                info!(user, from = ?path, "renamed a stored name to its NFC form");
                current = composed.into_owned();
            }
        }
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Ok(sub) = dir.open_dir(&current)
        {
            walk(user, &sub, &format!("{shown}{current}/"), depth + 1);
        }
    }
}
