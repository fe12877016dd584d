//! A network link between two programs on this machine, for `bench/run.sh --cases lan`:
//! a TCP relay that delays what it carries by half a round trip each way and lets it
//! through no faster than a rate, as a switched LAN between two hosts would. The
//! benchmark's other cases run over loopback, where a round trip costs microseconds and
//! a tool that waits for an answer per file loses nothing by it; on a LAN it does.
//!
//! `xfer-link --to ADDR [--listen ADDR] [--rtt-ms MS] [--mbit RATE]` listens on ADDR
//! (127.0.0.1:0), prints `listening on ADDR` once it does, and relays every connection
//! to `--to`. Each direction of a connection has its own link: what one read takes in
//! leaves once the link has sent what came before it, takes its time on the link (its
//! bytes and the Ethernet, IP and TCP framing of the 1448-byte segments that would carry
//! them, at the line rate), and is written out half a round trip after that (store and
//! forward, at most 1 MiB queued each way, like a switch's buffer). `--rtt-ms` is the
//! round trip the link adds (0.5), `--mbit` its line rate in 10^6 bits per second
//! (1000, gigabit Ethernet: at most about 117.7 MB/s of payload; 0 is unlimited).
//! Delays are kept with `nanosleep`, which on a busy machine wakes up to a few tenths
//! of a millisecond late: the round trip is at least the one asked for.
//!
//! The relay's own CPU is nobody's: the benchmark does not count it for any contender.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Bytes one read takes in at most: what leaves the link at once.
const READ_MAX: usize = 64 * 1024;
/// Reads queued on one direction of the link at most (with [`READ_MAX`], 1 MiB).
const QUEUE: usize = 16;

/// TCP payload bytes in one full-sized Ethernet frame (MTU 1500 less the IPv4 and TCP
/// headers with timestamps).
const SEGMENT: usize = 1448;
/// Bytes the wire carries for each segment besides its payload: preamble and gap (20),
/// Ethernet header and checksum (18), IPv4 (20) and TCP with timestamps (32) headers.
const SEGMENT_OVERHEAD: usize = 90;

/// One direction of the link.
#[derive(Clone, Copy, Debug)]
struct Link {
    /// Half the round trip.
    one_way: Duration,
    /// The line rate in bytes per second; 0 is unlimited.
    bytes_per_sec: f64,
}

impl Link {
    /// How long `n` bytes of payload take on the link: with the framing of the segments
    /// that carry them, so at 1000 Mbit/s at most about 117.7 MB/s of payload cross, as
    /// over gigabit Ethernet.
    fn serialize(&self, n: usize) -> Duration {
        if self.bytes_per_sec > 0.0 {
            let wire = n + n.div_ceil(SEGMENT) * SEGMENT_OVERHEAD;
            Duration::from_secs_f64(wire as f64 / self.bytes_per_sec)
        } else {
            Duration::ZERO
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: xfer-link --to ADDR [--listen ADDR] [--rtt-ms MS] [--mbit RATE]";
    let (mut to, mut listen, mut rtt_ms, mut mbit) = (None, "127.0.0.1:0".to_owned(), 0.5, 1000.0);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("xfer-link: {flag} needs a value ({usage})"))?;
        let number = || -> Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .with_context(|| {
                    format!("xfer-link: {flag} takes a number of 0 or more, not {value:?}")
                })
        };
        match flag.as_str() {
            "--to" => to = Some(value.clone()),
            "--listen" => listen = value.clone(),
            "--rtt-ms" => rtt_ms = number()?,
            "--mbit" => mbit = number()?,
            _ => bail!("xfer-link: unknown option {flag} ({usage})"),
        }
    }
    let to: SocketAddr = to
        .with_context(|| format!("xfer-link: --to is required ({usage})"))?
        .parse()
        .context("xfer-link: --to takes an address such as 127.0.0.1:2222")?;
    let link = Link {
        one_way: Duration::from_secs_f64(rtt_ms / 2000.0),
        bytes_per_sec: mbit * 1e6 / 8.0,
    };
    let listener =
        TcpListener::bind(&listen).with_context(|| format!("xfer-link: listening on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    serve(&listener, to, link);
    Ok(())
}

/// Relays every connection `listener` accepts to `to`, each on threads of its own.
fn serve(listener: &TcpListener, to: SocketAddr, link: Link) {
    for conn in listener.incoming() {
        match conn {
            Ok(client) => {
                thread::spawn(move || {
                    if let Err(e) = relay(client, to, link) {
                        eprintln!("xfer-link: relaying to {to}: {e}");
                    }
                });
            }
            Err(e) => eprintln!("xfer-link: accepting: {e}"),
        }
    }
}

/// Carries one connection both ways until both sides have finished sending.
fn relay(client: TcpStream, to: SocketAddr, link: Link) -> io::Result<()> {
    let server = TcpStream::connect(to)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let up = carry(client.try_clone()?, server.try_clone()?, link)?;
    let down = carry(server, client, link)?;
    let _ = up.join();
    let _ = down.join();
    Ok(())
}

/// One direction: a thread reads from `from` and stamps each read with when it leaves
/// the link; a second writes it to `to` at that time. Returns the reader's thread,
/// which ends after the writer.
fn carry(from: TcpStream, to: TcpStream, link: Link) -> io::Result<thread::JoinHandle<()>> {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE);
    let from_again = from.try_clone()?;
    let writer = thread::spawn(move || {
        let written = (|| -> io::Result<()> {
            for (due, data) in rx {
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                (&to).write_all(&data)?;
            }
            // The sender finished: so does the link, once what it held is out.
            to.shutdown(Shutdown::Write)
        })();
        if written.is_err() {
            // The receiver is gone: stop reading what nobody will take.
            let _ = from_again.shutdown(Shutdown::Read);
            let _ = to.shutdown(Shutdown::Both);
        }
    });
    Ok(thread::spawn(move || {
        let mut free = Instant::now();
        loop {
            let mut data = vec![0u8; READ_MAX];
            let n = match (&from).read(&mut data) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            data.truncate(n);
            free = free.max(Instant::now()) + link.serialize(n);
            if tx.send((free + link.one_way, data)).is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.join();
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link in front of an echo server; returns the link's address.
    fn echo_behind(link: Link) -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            for conn in echo.incoming() {
                let mut conn = conn.unwrap();
                thread::spawn(move || {
                    let mut back = conn.try_clone().unwrap();
                    io::copy(&mut conn, &mut back).unwrap();
                    back.shutdown(Shutdown::Write).unwrap();
                });
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        thread::spawn(move || serve(&front, echo_addr, link));
        addr
    }

    #[test]
    fn bytes_cross_whole_and_in_order_both_ways() {
        let addr = echo_behind(Link {
            one_way: Duration::from_micros(100),
            bytes_per_sec: 0.0,
        });
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        let mut conn = TcpStream::connect(addr).unwrap();
        let mut sender = conn.try_clone().unwrap();
        let sent = data.clone();
        let writer = thread::spawn(move || {
            sender.write_all(&sent).unwrap();
            sender.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(
            back == data,
            "{} bytes came back of {}",
            back.len(),
            data.len()
        );
    }

    #[test]
    fn a_round_trip_takes_at_least_the_links() {
        let addr = echo_behind(Link {
            one_way: Duration::from_millis(2),
            bytes_per_sec: 0.0,
        });
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_nodelay(true).unwrap();
        let start = Instant::now();
        for i in 0..10u8 {
            conn.write_all(&[i]).unwrap();
            let mut b = [0u8];
            conn.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i);
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(40),
            "10 round trips of 4 ms took {took:?}"
        );
    }

    #[test]
    fn the_wire_carries_the_framing_too() {
        let gigabit = Link {
            one_way: Duration::ZERO,
            bytes_per_sec: 125e6,
        };
        // 1448 bytes of payload in a 1538-byte slot on the wire.
        assert_eq!(gigabit.serialize(1448), Duration::from_nanos(12_304));
        assert_eq!(gigabit.serialize(1449), Duration::from_nanos(12_304 + 728));
        let payload = 1e9 / gigabit.serialize(1_448_000).as_nanos() as f64 * 1.448;
        assert!((117.0..118.0).contains(&payload), "{payload} MB/s");
    }

    #[test]
    fn bytes_cross_no_faster_than_the_rate() {
        // 8 Mbit/s: 1 MB takes a second each way.
        let addr = echo_behind(Link {
            one_way: Duration::ZERO,
            bytes_per_sec: 1e6,
        });
        let mut conn = TcpStream::connect(addr).unwrap();
        let mut sender = conn.try_clone().unwrap();
        let start = Instant::now();
        let writer = thread::spawn(move || {
            sender.write_all(&vec![1u8; 500_000]).unwrap();
            sender.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back.len(), 500_000);
        // Each direction paces on its own: half a second at least (one way's pacing
        // overlaps the other's).
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(490),
            "500 kB at 1 MB/s took {took:?}"
        );
    }
}
