//! Writes past the page cache (`O_DIRECT`) for big received files, and reads of big
//! stored files the same way ([`Reader`]).
//!
//! A receiver writes each chunk where it belongs in the file. Through the page cache
//! that is a copy into pages the kernel must first allocate and later write back and
//! reclaim: on this project's VM about a third of a GiB-sized push's CPU on the
//! receiving side, and much more when the memory was just freed (bench/RESULTS.md).
//! With `O_DIRECT` the disk takes the bytes from the receiver's own buffer.
//!
//! [`Writer`] opens a second descriptor of the file with `O_DIRECT` (a new open file
//! description, through `/proc/self/fd/N`) when the file is at least [`DIRECT_MIN`]
//! bytes, is not on tmpfs (where direct writes are page-cache writes anyway) and its
//! filesystem says what alignment direct I/O needs (`statx` with `STATX_DIOALIGN`,
//! Linux 6.1 and later; a filesystem that cannot do direct I/O says 0, NFS and FUSE
//! among them, and is written through the cache as before). A chunk whose buffer,
//! offset and length are all aligned goes through it; anything else (the last, shorter
//! chunk; a buffer the allocator placed elsewhere) through the receiver's own
//! descriptor and the page cache, flushed by [`Writeback`]. The two never cover the
//! same bytes at once, and the kernel keeps reads of either kind coherent with both.
//!
//! Durability is unchanged: a direct write may still sit in the disk's volatile cache,
//! and the receiver's final `fsync` flushes that cache as it flushes pages. A write
//! error comes back from the direct write itself, at once. A direct write the kernel
//! refuses with `EINVAL` (an alignment the filesystem did not declare) is written
//! again through the cache, and the file's later chunks go that way too.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};

use rustix::fs::{AtFlags, OFlags, StatxFlags};

use crate::Writeback;

/// Files at least this big are written past the page cache where they can be. Below
/// it the cache's absorbing writes and the batched syncs of many files are worth more
/// than the copy saved.
pub const DIRECT_MIN: u64 = 64 << 20;

/// tmpfs's `f_type` (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The largest memory alignment a chunk buffer is known to have (a page: the protocol's
/// receive buffers and `ChunkBuf`s start on one).
const MAX_MEM_ALIGN: u32 = 4096;

/// Whether the environment allows direct writes: yes unless `XFER_DIRECT_IO` is `0`,
/// `off`, `false` or `no` (xfer's and xfer-ceiling's switch; xferd has `direct_io`).
pub fn direct_from_env() -> bool {
    std::env::var("XFER_DIRECT_IO").map_or(true, |v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

/// How one received file's bytes reach the disk: aligned chunks of a big file directly,
/// the rest through the page cache, flushed as it fills ([`Writeback`]).
#[derive(Debug)]
pub struct Writer {
    writeback: Writeback,
    direct: Option<Direct>,
    /// Bytes written past the cache (tests and curiosity).
    direct_bytes: u64,
}

/// The file's direct descriptor and the alignment its filesystem asks for.
#[derive(Debug)]
struct Direct {
    file: File,
    mem_align: usize,
    offset_align: u64,
}

impl Writer {
    /// The writer of `file`, which will hold `size` bytes, past the page cache where
    /// `direct` allows it and the file qualifies; flushes run on threads named `name`
    /// and report a failure to `report` (see [`Writeback::new`]).
    pub fn new(
        file: &File,
        size: u64,
        direct: bool,
        name: &'static str,
        report: fn(io::Error),
    ) -> Writer {
        Writer {
            writeback: Writeback::new(name, report),
            direct: open_direct(file, size, direct),
            direct_bytes: 0,
        }
    }

    /// Writes all of `data` at `offset` of `file` (the file [`Writer::new`] was given).
    pub fn write_at(&mut self, file: &File, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(direct) = &self.direct
            && direct.fits(data, offset)
        {
            match direct.file.write_all_at(data, offset) {
                Ok(()) => {
                    self.direct_bytes += data.len() as u64;
                    return Ok(());
                }
                // Nothing is lost: the same bytes are written through the cache below.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        file.write_all_at(data, offset)?;
        self.writeback.wrote(file, data.len() as u64);
        Ok(())
    }

    /// Whether chunks go past the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Bytes written past the page cache so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// Waits for the flush under way and returns the error of any flush that failed
    /// (see [`Writeback::finish`]); call it before the final sync.
    pub fn finish(&mut self) -> io::Result<()> {
        self.writeback.finish()
    }

    /// Whether a flush that already ended failed: what was written may not be on the
    /// disk (see [`Writeback::finish`]).
    pub fn failed(&self) -> bool {
        self.writeback.failed()
    }
}

impl Direct {
    fn fits(&self, data: &[u8], offset: u64) -> bool {
        (data.as_ptr() as usize).is_multiple_of(self.mem_align)
            && offset.is_multiple_of(self.offset_align)
            && (data.len() as u64).is_multiple_of(self.offset_align)
            && !data.is_empty()
    }
}

/// How a big stored file is read to be sent: past the page cache (`O_DIRECT`) where the
/// filesystem allows it, so reading a file does not fill the host's memory with it (and,
/// on a VM that hands freed memory back to its host, does not pay to take that memory
/// back). A file read often is then read from the disk each time.
#[derive(Debug)]
pub struct Reader {
    direct: Option<Direct>,
}

impl Reader {
    /// The reader of `file` (`size` bytes), past the page cache where `direct` allows
    /// it and the file qualifies (as for [`Writer`]).
    pub fn new(file: &File, size: u64, direct: bool) -> Reader {
        Reader {
            direct: open_direct_as(file, size, direct, false),
        }
    }

    /// Whether uncached chunks are read past the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Fills `buf` from `offset` of `file` (the file [`Reader::new`] was given): with a
    /// direct read when `buf`, `offset` and the length are aligned, otherwise through
    /// the cache. (Asking the cache first, `preadv2` with `RWF_NOWAIT`, was tried: on a
    /// miss the kernel starts its readahead into the cache anyway, and the data was read
    /// twice; bench/RESULTS.md.) A file shorter than `offset + buf.len()` is an
    /// `UnexpectedEof` error, as with
    /// [`std::os::unix::fs::FileExt::read_exact_at`].
    pub fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(direct) = &self.direct
            && direct.fits(buf, offset)
        {
            match direct.file.read_exact_at(buf, offset) {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                done => return done,
            }
        }
        file.read_exact_at(buf, offset)
    }
}

/// The direct descriptor of `file` for writing, where it is allowed, worth it and
/// possible.
fn open_direct(file: &File, size: u64, allowed: bool) -> Option<Direct> {
    open_direct_as(file, size, allowed, true)
}

/// The direct descriptor of `file`, for writing or reading.
fn open_direct_as(file: &File, size: u64, allowed: bool, write: bool) -> Option<Direct> {
    if size < DIRECT_MIN || !allowed {
        return None;
    }
    if rustix::fs::fstatfs(file).ok()?.f_type as i64 == TMPFS_MAGIC {
        return None;
    }
    let st = rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
    let (mem, off) = (st.stx_dio_mem_align, st.stx_dio_offset_align);
    let declared = st.stx_mask & StatxFlags::DIOALIGN.bits() != 0;
    if !declared || mem == 0 || off == 0 || !mem.is_power_of_two() || !off.is_power_of_two() {
        return None;
    }
    if mem > MAX_MEM_ALIGN {
        return None;
    }
    let direct = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(OFlags::DIRECT.bits() as i32)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()?;
    Some(Direct {
        file: direct,
        mem_align: mem as usize,
        offset_align: u64::from(off),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    /// A page-aligned buffer of `len` bytes, filled from `seed`.
    fn aligned(len: usize, seed: u8) -> (Vec<u8>, usize) {
        let mut v = vec![0u8; len + 4096];
        let start = v.as_ptr().align_offset(4096);
        for (i, b) in v[start..start + len].iter_mut().enumerate() {
            *b = seed.wrapping_add((i % 251) as u8);
        }
        (v, start)
    }

    /// A directory on a disk, where direct I/O usually works: `/var/tmp` (kept on the
    /// disk by convention, where `/tmp` may be tmpfs).
    fn disk_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/var/tmp").unwrap_or_else(|_| tempfile::tempdir().unwrap())
    }

    #[test]
    fn small_files_and_tmpfs_stay_in_the_cache() {
        let dir = disk_dir();
        let file = File::create(dir.path().join("small")).unwrap();
        assert!(!Writer::new(&file, DIRECT_MIN - 1, true, "t", |_| {}).is_direct());
        if std::path::Path::new("/dev/shm").is_dir() {
            let shm = tempfile::tempdir_in("/dev/shm").unwrap();
            let file = File::create(shm.path().join("big")).unwrap();
            assert!(!Writer::new(&file, DIRECT_MIN, true, "t", |_| {}).is_direct());
        }
    }

    #[test]
    fn aligned_chunks_go_direct_and_the_rest_through_the_cache() {
        let dir = disk_dir();
        let path = dir.path().join("big");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let size = DIRECT_MIN + 4096 + 17;
        file.set_len(size).unwrap();
        let mut w = Writer::new(&file, size, true, "t", |e| panic!("{e}"));
        if !w.is_direct() {
            // The build's disk cannot do direct I/O (say, the target dir on tmpfs):
            // nothing to check here, and the e2e test checks the daemon where it can.
            eprintln!("skipped: {} takes no direct writes", dir.path().display());
            return;
        }
        let (a, sa) = aligned(1 << 20, 1);
        w.write_at(&file, &a[sa..sa + (1 << 20)], 0).unwrap();
        assert_eq!(w.direct_bytes(), 1 << 20, "an aligned chunk goes direct");
        // Misaligned in memory: through the cache, same bytes on the disk.
        let (b, sb) = aligned((1 << 20) + 1, 2);
        w.write_at(&file, &b[sb + 1..sb + 1 + (1 << 20)], 1 << 20)
            .unwrap();
        // The short last chunk.
        let (c, sc) = aligned(4096 + 17, 3);
        w.write_at(&file, &c[sc..sc + 4096 + 17], DIRECT_MIN)
            .unwrap();
        assert_eq!(w.direct_bytes(), 1 << 20);
        w.finish().unwrap();
        file.sync_all().unwrap();
        let mut got = vec![0u8; 1 << 20];
        file.read_exact_at(&mut got, 0).unwrap();
        assert!(got == a[sa..sa + (1 << 20)], "direct bytes read back");
        file.read_exact_at(&mut got, 1 << 20).unwrap();
        assert!(
            got == b[sb + 1..sb + 1 + (1 << 20)],
            "cached bytes read back"
        );
        let mut tail = vec![0u8; 4096 + 17];
        file.read_exact_at(&mut tail, DIRECT_MIN).unwrap();
        assert!(tail == c[sc..sc + 4096 + 17], "tail read back");
    }

    #[test]
    fn a_reader_reads_cached_and_uncached_chunks_alike() {
        let dir = disk_dir();
        let path = dir.path().join("big");
        let size = DIRECT_MIN + 17;
        let (a, sa) = aligned(1 << 20, 5);
        {
            let file = File::create(&path).unwrap();
            file.set_len(size).unwrap();
            // Written past the cache: not in memory when read below.
            let mut w = Writer::new(&file, size, true, "t", |e| panic!("{e}"));
            w.write_at(&file, &a[sa..sa + (1 << 20)], 0).unwrap();
            w.write_at(&file, &a[sa..sa + 17], DIRECT_MIN).unwrap();
            file.sync_all().unwrap();
        }
        let file = File::open(&path).unwrap();
        let r = Reader::new(&file, size, true);
        if !r.is_direct() {
            eprintln!("skipped: {} takes no direct reads", dir.path().display());
            return;
        }
        let (mut b, sb) = aligned(1 << 20, 0);
        r.read_exact_at(&file, &mut b[sb..sb + (1 << 20)], 0)
            .unwrap();
        assert!(
            b[sb..sb + (1 << 20)] == a[sa..sa + (1 << 20)],
            "uncached chunk"
        );
        // Now cached by an ordinary read: the same bytes again.
        let mut plain = vec![0u8; 1 << 20];
        file.read_exact_at(&mut plain, 0).unwrap();
        b[sb..sb + (1 << 20)].fill(0);
        r.read_exact_at(&file, &mut b[sb..sb + (1 << 20)], 0)
            .unwrap();
        assert!(
            b[sb..sb + (1 << 20)] == a[sa..sa + (1 << 20)],
            "cached chunk"
        );
        // The short last chunk, and a read past the end.
        r.read_exact_at(&file, &mut b[sb..sb + 17], DIRECT_MIN)
            .unwrap();
        assert!(b[sb..sb + 17] == a[sa..sa + 17]);
        let past = r.read_exact_at(&file, &mut b[sb..sb + (1 << 20)], DIRECT_MIN - 4096);
        assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn forbidden_means_through_the_cache() {
        let dir = disk_dir();
        let file = File::create(dir.path().join("big")).unwrap();
        assert!(open_direct(&file, DIRECT_MIN, false).is_none());
    }
}
