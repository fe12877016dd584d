//! The ceiling of a file transfer on this machine, for `bench/run.sh`: one file sent over
//! a bare tokio-rustls stream on 127.0.0.1 with exactly xfer's TLS configuration (TLS 1.3,
//! the same crypto provider and cipher suites, from `xfer-certs`), read and hashed in
//! chunks on the sending side, hashed and written at chunk offsets on the receiving side,
//! as xfer does ([`Digest::of_chunk`], 1 MiB chunks), with no protocol at all: no
//! frames, no acknowledgements, no manifest, no commit. What xfer reaches is reported as
//! a fraction of this.
//!
//! `xfer-ceiling [--blocking] SRC DST` sends SRC to DST (DST is replaced) and prints one
//! line: `bytes seconds MB/s`. The timing covers the handshake and ends when the
//! receiver has written and hashed the last byte and synced the file (xferd answers a
//! commit once the file is durable; sftp, scp and rsync do not sync); like xferd and
//! xfer, the receiver flushes the file as it fills (crate xfer-disk). Sender and
//! receiver each run on a thread of their own, like two processes would:
//!
//! - by default each has a single-threaded tokio runtime and does its file work (read
//!   and hash; hash and write) on a blocking thread beside its TLS stream, as xfer does;
//! - `--blocking`: each does everything in order on its one thread, with rustls's
//!   blocking `StreamOwned` over a std `TcpStream` (read, hash, encrypt, send; receive,
//!   decrypt, hash, write): no runtime, no handoff between threads, so the least CPU
//!   per byte; on two cores it also has no third thread to share them with.
//!
//! `--pull` makes the sender read SRC as xferd reads a stored file for a download: past
//! the page cache where the filesystem allows it ([`xfer_disk::Reader`]; `XFER_DIRECT_IO=0`
//! turns it off), and without hashing it (the receiver checks each chunk). Given the file
//! xferd stored for a push, that is the ceiling of a pull: on a disk the bytes come from
//! the disk, not from memory.
//!
//! `bench/cases/big.sh` runs both designs and takes the faster as the ceiling of a push,
//! and `--pull` (tokio design) of xferd's copy as the ceiling of a pull.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xfer_certs::{PinnedVerifier, config, generate};
use xfer_proto::{CHUNK_SIZE, ChunkBuf, Digest};

fn main() -> Result<()> {
    // The memcpy xfer and xferd run with.
    xfer_glibc::reexec_with(&[xfer_glibc::REP_MOVSB_THRESHOLD]);
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| {
        let found = args.iter().position(|a| a == name);
        found.map(|i| args.remove(i)).is_some()
    };
    let (blocking, pull) = (flag("--blocking"), flag("--pull"));
    if let Some(unknown) = args.iter().find(|a| a.starts_with("--")) {
        bail!("xfer-ceiling: unknown option {unknown} (it takes --blocking and --pull)");
    }
    let [src, dst] = args.as_slice() else {
        bail!(
            "usage: xfer-ceiling [--blocking] [--pull] SRC DST (sends SRC to DST over TLS on 127.0.0.1)"
        );
    };
    let id = generate::generate_self_signed(&["localhost".into()])?;
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the generated certificate")?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
        .context("reading the generated key")?;
    let server = config::server_config(certs, key)?;
    let client = config::client_config_pinned(PinnedVerifier::new(Some(id.fingerprint)));
    let acceptor = TlsAcceptor::from(Arc::clone(&server));
    let connector = TlsConnector::from(Arc::clone(&client));

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let size = std::fs::metadata(src)
        .with_context(|| format!("reading `{src}`"))?
        .len();
    let (src, dst) = (src.clone(), dst.clone());
    let _ = std::fs::remove_file(&dst);

    let start = Instant::now();
    if blocking {
        listener.set_nonblocking(false)?;
        let receiver = std::thread::spawn(move || receive_blocking(&listener, server, &dst, size));
        let sender = std::thread::spawn(move || send_blocking(addr, client, &src, size, pull));
        return finish(sender, receiver, size, start);
    }
    let receiver = std::thread::spawn(move || -> Result<()> {
        runtime()?.block_on(async {
            let listener = TcpListener::from_std(listener)?;
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let tls = acceptor.accept(tcp).await?;
            receive(tls, &dst, size).await
        })
    });
    let sender = std::thread::spawn(move || -> Result<()> {
        runtime()?.block_on(async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            send(tls, &src, size, pull).await
        })
    });
    finish(sender, receiver, size, start)
}

/// Joins both sides and prints the line. The receiver's error comes first: when it
/// fails (an unwritable DST), the sender only sees the connection break.
fn finish(
    sender: std::thread::JoinHandle<Result<()>>,
    receiver: std::thread::JoinHandle<Result<()>>,
    size: u64,
    start: Instant,
) -> Result<()> {
    let sent = sender.join().expect("the sender thread panicked");
    receiver
        .join()
        .expect("the receiver thread panicked")
        .context("receiving")?;
    sent.context("sending")?;
    let secs = start.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{size} {secs:.3} {:.0}", size as f64 / secs / 1e6)?;
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Chunks in flight between a side's blocking file thread and its TLS stream.
const DEPTH: usize = 4;

/// Reads `src` a chunk at a time on a blocking thread that hashes each chunk (not with
/// `pull`), and writes the chunks to the stream as they come (buffers go back to the
/// reader to be reused).
async fn send(
    mut tls: tokio_rustls::client::TlsStream<TcpStream>,
    src: &str,
    size: u64,
    pull: bool,
) -> Result<()> {
    let source = Source::open(src, size, pull)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ChunkBuf>(DEPTH);
    let (back, spare) = std::sync::mpsc::channel::<ChunkBuf>();
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut offset = 0u64;
        while offset < size {
            let len = (size - offset).min(CHUNK_SIZE as u64) as usize;
            let mut buf = spare
                .try_recv()
                .unwrap_or_else(|_| ChunkBuf::new(CHUNK_SIZE));
            buf.resize(len);
            source.read_chunk(&mut buf, offset)?;
            if tx.blocking_send(buf).is_err() {
                break;
            }
            offset += len as u64;
        }
        Ok(())
    });
    while let Some(buf) = rx.recv().await {
        tls.write_all(&buf).await?;
        let _ = back.send(buf);
    }
    reader.await??;
    tls.shutdown().await?;
    // Unread data (the server's session tickets) would make closing reset the
    // connection under the receiver: wait for the receiver to close first.
    let mut rest = [0u8; 4096];
    while matches!(tls.read(&mut rest).await, Ok(n) if n > 0) {}
    Ok(())
}

/// Reads the stream a chunk at a time and hands each to a blocking thread that hashes it
/// and writes it at its offset (buffers come back to be reused).
async fn receive(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    dst: &str,
    size: u64,
) -> Result<()> {
    let file = File::create(dst).with_context(|| format!("creating `{dst}`"))?;
    // Sized first, as xferd sizes an upload's partial file.
    file.set_len(size)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, ChunkBuf)>(DEPTH);
    let (back, mut spare) = tokio::sync::mpsc::unbounded_channel::<ChunkBuf>();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut writer = writer(&file, size);
        while let Some((offset, buf)) = rx.blocking_recv() {
            std::hint::black_box(Digest::of_chunk(&buf, offset, size));
            writer.write_at(&file, &buf, offset)?;
            let _ = back.send(buf);
        }
        // Durable, as xferd makes an upload before it answers the commit.
        writer.finish()?;
        file.sync_all()
    });
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(CHUNK_SIZE as u64) as usize;
        let mut buf = spare
            .try_recv()
            .unwrap_or_else(|_| ChunkBuf::new(CHUNK_SIZE));
        buf.resize(len);
        tls.read_exact(&mut buf).await?;
        if tx.send((offset, buf)).await.is_err() {
            break;
        }
        offset += len as u64;
    }
    drop(tx);
    writer.await??;
    // The sender's close_notify: reading it lets the sender finish cleanly.
    let mut rest = [0u8; 16];
    if tls.read(&mut rest).await? != 0 {
        bail!("the sender sent more than {size} bytes");
    }
    tls.shutdown().await?;
    Ok(())
}

/// The received file written as xferd and xfer write theirs: a big one past the page
/// cache where the filesystem allows it, otherwise flushed as it fills (a failed flush
/// is met again by the final sync).
fn writer(file: &File, size: u64) -> xfer_disk::Writer {
    xfer_disk::Writer::new(
        file,
        size,
        xfer_disk::direct_from_env(),
        "ceiling-writeback",
        |_| {},
    )
}

/// The sender's file, read as xfer push reads a local one (through the page cache, each
/// chunk hashed), or with `pull` as xferd reads a stored one for a download (past the
/// cache where it can, not hashed: the receiver checks).
struct Source {
    file: File,
    reader: xfer_disk::Reader,
    size: u64,
    pull: bool,
}

impl Source {
    fn open(path: &str, size: u64, pull: bool) -> Result<Source> {
        let file = File::open(path).with_context(|| format!("opening `{path}`"))?;
        let reader = xfer_disk::Reader::new(&file, size, pull && xfer_disk::direct_from_env());
        Ok(Source {
            file,
            reader,
            size,
            pull,
        })
    }

    /// Fills `buf` with the chunk at `offset`, hashing it unless pulling.
    fn read_chunk(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reader.read_exact_at(&self.file, buf, offset)?;
        if !self.pull {
            std::hint::black_box(Digest::of_chunk(buf, offset, self.size));
        }
        Ok(())
    }
}

/// `--blocking`: reads, hashes (not with `pull`) and sends each chunk in order on this
/// thread.
fn send_blocking(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    src: &str,
    size: u64,
    pull: bool,
) -> Result<()> {
    let tcp = std::net::TcpStream::connect(addr).context("connecting to the receiver")?;
    tcp.set_nodelay(true)?;
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost")?)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let source = Source::open(src, size, pull)?;
    let mut buf = ChunkBuf::new(CHUNK_SIZE);
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(CHUNK_SIZE as u64) as usize;
        source.read_chunk(&mut buf[..len], offset)?;
        tls.write_all(&buf[..len])?;
        offset += len as u64;
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    // As in the async sender: wait for the receiver to close first.
    let mut rest = [0u8; 4096];
    while matches!(tls.read(&mut rest), Ok(n) if n > 0) {}
    Ok(())
}

/// `--blocking`: receives, hashes and writes each chunk in order on this thread.
fn receive_blocking(
    listener: &std::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    dst: &str,
    size: u64,
) -> Result<()> {
    let (tcp, _) = listener.accept().context("accepting the sender")?;
    tcp.set_nodelay(true)?;
    let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config)?, tcp);
    let file = File::create(dst).with_context(|| format!("creating `{dst}`"))?;
    // Sized first, as xferd sizes an upload's partial file.
    file.set_len(size)?;
    let mut buf = ChunkBuf::new(CHUNK_SIZE);
    let mut writer = writer(&file, size);
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(CHUNK_SIZE as u64) as usize;
        tls.read_exact(&mut buf[..len])?;
        std::hint::black_box(Digest::of_chunk(&buf[..len], offset, size));
        writer.write_at(&file, &buf[..len], offset)?;
        offset += len as u64;
    }
    writer.finish()?;
    file.sync_all()?;
    let mut rest = [0u8; 16];
    if tls.read(&mut rest)? != 0 {
        bail!("the sender sent more than {size} bytes");
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(())
}
