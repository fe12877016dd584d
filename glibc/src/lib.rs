//! The glibc tunables xfer and xferd start with ([`reexec_with`]): glibc reads
//! `GLIBC_TUNABLES` only when a program starts, so a program that wants one executes
//! itself again, once, with it set: same process (pid), arguments and environment.
//! Tunables set by whoever started the program are left as they are (and end the
//! re-exec): theirs is the say. A program running with raised privileges (setuid, file
//! capabilities: glibc's secure mode, which may drop `GLIBC_TUNABLES`) is never
//! executed again, so it cannot loop.
#![warn(missing_docs)]

/// glibc's `memcpy` copies blocks of 2 KiB and up with `rep movsb`. On AMD Zen CPUs that
/// runs about 20× slower when the destination is a few bytes past the source modulo a
/// page (glibc bug 30994, fixed in 2.39; Debian 12 has 2.36): 0.42–0.61 s per GiB
/// against 0.02–0.03 s for 16 KiB copies (bench/RESULTS.md, `bench/copies.sh`). rustls
/// copies every received TLS record (up to 16 KiB) out of its read buffer at such
/// offsets, which cost a receiver a quarter of its CPU. This threshold keeps `rep movsb`
/// out of every copy.
pub const REP_MOVSB_THRESHOLD: &str = "glibc.cpu.x86_rep_movsb_threshold=1073741824";

/// glibc's malloc raises its mmap threshold to the largest mapped block freed (up to
/// 32 MiB): once a 1 MiB frame buffer has been freed, later ones come from the heap
/// arenas, which are not given back, so what connections used stays resident after they
/// close (docs/TESTING.md, "Memory after connections close"). A fixed threshold (glibc's
/// default, 128 KiB) turns the rise off. The daemon's.
pub const FIXED_MMAP_THRESHOLD: &str = "glibc.malloc.mmap_threshold=131072";

/// Executes this program again with `tunables` in `GLIBC_TUNABLES`, unless that is set
/// already; [`REP_MOVSB_THRESHOLD`] is left out on CPUs other than AMD's. Call it first
/// thing in `main`, before any thread starts. Returns when nothing needs doing, or when
/// the exec failed (no `/proc`, the program's file gone): the program then runs with
/// glibc's defaults.
pub fn reexec_with(tunables: &[&str]) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        if std::env::var_os("GLIBC_TUNABLES").is_some() || secure_mode() {
            return;
        }
        let amd = cpu_vendor().as_deref() == Some("AuthenticAMD");
        let wanted: Vec<&str> = tunables
            .iter()
            .copied()
            .filter(|&t| t != REP_MOVSB_THRESHOLD || (amd && cfg!(target_arch = "x86_64")))
            .collect();
        if wanted.is_empty() {
            return;
        }
        // The program's own path, not `/proc/self/exe`: the kernel names the process
        // after the file executed (`ps`, `pgrep`, `top`, the journal's `_COMM`), which
        // would then be "exe". A program whose file was replaced or removed since it
        // started runs on without the tunables.
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        if exe.as_os_str().to_string_lossy().ends_with(" (deleted)") {
            return;
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        let _ = std::process::Command::new(exe)
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", wanted.join(":"))
            .exec();
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = tunables;
}

/// Whether this process runs in glibc's secure mode (`AT_SECURE` in its auxiliary
/// vector: setuid, setgid or file capabilities). When it cannot tell, it says yes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn secure_mode() -> bool {
    const AT_SECURE: usize = 23;
    const WORD: usize = std::mem::size_of::<usize>();
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return true;
    };
    let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("a word"));
    auxv.chunks_exact(2 * WORD)
        .map(|pair| (word(&pair[..WORD]), word(&pair[WORD..])))
        .find(|&(key, _)| key == AT_SECURE)
        .is_none_or(|(_, value)| value != 0)
}

/// The CPU's vendor as `/proc/cpuinfo` names it (`AuthenticAMD`, `GenuineIntel`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cpu_vendor() -> Option<String> {
    use std::io::BufRead as _;
    let file = std::fs::File::open("/proc/cpuinfo").ok()?;
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .take(64)
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "vendor_id").then(|| value.trim().to_owned())
        })
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn a_test_process_is_not_in_secure_mode() {
        assert!(!super::secure_mode());
    }
}
