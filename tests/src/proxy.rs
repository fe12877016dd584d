//! A fault-injecting TCP proxy for network-fault tests: it listens on 127.0.0.1:0,
//! forwards every connection to a target (the daemon), and can, at a chosen byte
//! offset of one direction of a connection's stream, reset the connection or stall
//! that direction.
//!
//! A reset closes both sides with `SO_LINGER 0`, so both peers see an RST, as when a
//! NAT box or a firewall drops the flow. A stall stops delivering one direction's bytes
//! from the offset on (they are read and discarded, like a path that went black one
//! way); the other direction keeps flowing, and the connection ends only when one peer
//! gives up and closes, which the proxy then passes on to the other. So a stall ends
//! within the peers' own timeouts, and a test that waits for that proves they have them.
//!
//! The proxy runs on a thread of its own with its own runtime, so synchronous tests
//! (which drive the real binaries) use it as they use a process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to server (what a push's data takes).
    Up,
    /// Server to client (what a pull's data takes).
    Down,
}

/// What happens at the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Both sides are closed with an RST.
    Reset,
    /// This direction's bytes stop arriving; the connection stays open.
    Stall,
}

/// A fault: `action` once `at` bytes went `way` on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub way: Way,
    pub at: u64,
    pub action: Action,
}

/// Bytes that went each way on one finished connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

#[derive(Default)]
struct Shared {
    /// Applied to every connection accepted while it is set.
    fault: Mutex<Option<Fault>>,
    fired: AtomicU64,
    finished: Mutex<Vec<Moved>>,
    /// Where new connections go instead of the first target ([`Proxy::set_target`]).
    target: Mutex<Option<SocketAddr>>,
}

/// A running proxy; stops (and closes its connections) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding connections made to [`Proxy::addr`] to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let conn_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
                tx.send(listener.local_addr().expect("proxy address"))
                    .expect("proxy caller waits");
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        let fault = *conn_shared.fault.lock().expect("not poisoned");
                        let to = conn_shared
                            .target
                            .lock()
                            .expect("not poisoned")
                            .unwrap_or(target);
                        tokio::spawn(forward(client, to, fault, conn_shared.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = rx.recv().expect("the proxy started");
        Proxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the fault for connections accepted from now on (`None`: forward faithfully).
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.shared.fault.lock().expect("not poisoned") = fault;
    }

    /// Sends connections accepted from now on to `target` (a load balancer moving
    /// clients to another daemon when one goes down).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("not poisoned") = Some(target);
    }

    /// How many faults fired so far (a fault whose offset was never reached did not).
    pub fn fired(&self) -> u64 {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Bytes moved by each connection that has ended, in the order they ended.
    pub fn finished(&self) -> Vec<Moved> {
        self.shared.finished.lock().expect("not poisoned").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How one direction ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The source closed cleanly; the destination's write side was shut down.
    Eof,
    /// Reading or writing failed, or a stalled direction's source closed.
    Broken,
    /// The fault reset the connection.
    Reset,
}

async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    fault: Option<Fault>,
    shared: Arc<Shared>,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let fault_for = |way| fault.filter(|f| f.way == way);
    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let mut up_pump = std::pin::pin!(pump(&mut cr, &mut sw, fault_for(Way::Up), &up, &shared));
        let mut down_pump =
            std::pin::pin!(pump(&mut sr, &mut cw, fault_for(Way::Down), &down, &shared));
        // A clean end of one direction (a half-close) lets the other finish; anything
        // else ends the connection.
        tokio::select! {
            e = &mut up_pump => if e == End::Eof { down_pump.await } else { e },
            e = &mut down_pump => if e == End::Eof { up_pump.await } else { e },
        }
    };
    if end == End::Reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    drop((client, server));
    shared.finished.lock().expect("not poisoned").push(Moved {
        up: up.load(Ordering::SeqCst),
        down: down.load(Ordering::SeqCst),
    });
}

/// Copies `src` to `dst`, counting into `moved`, applying `fault` at its offset.
async fn pump<R, W>(
    src: &mut R,
    dst: &mut W,
    fault: Option<Fault>,
    moved: &AtomicU64,
    shared: &Shared,
) -> End
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => {
                let _ = dst.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Broken,
        };
        let done = moved.load(Ordering::SeqCst);
        let pass = match fault {
            Some(f) if done + n as u64 > f.at => (f.at.saturating_sub(done)) as usize,
            _ => n,
        };
        if dst.write_all(&buf[..pass]).await.is_err() {
            return End::Broken;
        }
        moved.fetch_add(pass as u64, Ordering::SeqCst);
        if pass < n {
            let _ = dst.flush().await;
            shared.fired.fetch_add(1, Ordering::SeqCst);
            return match fault.map(|f| f.action) {
                Some(Action::Stall) => {
                    // Swallow everything after the offset until the source gives up.
                    while matches!(src.read(&mut buf).await, Ok(n) if n > 0) {}
                    End::Broken
                }
                _ => End::Reset,
            };
        }
    }
}
