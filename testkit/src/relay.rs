//! A delaying TCP relay: a loopback port that forwards every connection to a target, each chunk
//! sent on a set time after it arrived, in both directions, so the round trip through it costs
//! twice the delay.
//!
//! It exists for one reason: this machine's kernel has no `sch_netem` (`tc qdisc add dev lo root
//! netem delay 200ms` answers "Specified qdisc kind is unknown"), so added latency cannot come
//! from the kernel. Packet loss still can (iptables' `statistic` match drops real packets); the
//! relay adds the latency only. A test that finds netem uses it instead.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A relay on a loopback port of its own; every connection it made is cut when dropped.
#[derive(Debug)]
pub struct DelayRelay {
    /// The port clients connect to instead of the target's.
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    delay_ms: AtomicU64,
    chunks: AtomicU64,
    stop: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

impl DelayRelay {
    /// Relays a new loopback port to `target`, with no delay until [`DelayRelay::set_delay`].
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the relay");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || accept(&listener, target, &accepting));
        Self { port, shared }
    }

    /// From now on, each chunk is forwarded `delay` after it arrived.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).expect("a delay in milliseconds");
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many chunks the relay has forwarded, both directions together.
    pub fn chunks(&self) -> u64 {
        self.shared.chunks.load(Ordering::SeqCst)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.shared.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        // A target that refuses or loses the connection: the client sees it closed, as it
        // would without the relay.
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        shared
            .streams
            .lock()
            .unwrap()
            .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
        pipe(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            shared,
        );
        pipe(server, client, shared);
    }
}

/// One direction: a reader stamps each chunk with its arrival, a writer sends it once the
/// delay has passed (so chunks stay in order and a slow chunk never holds up the reading).
fn pipe(mut from: TcpStream, mut to: TcpStream, shared: &Arc<Shared>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reading = Arc::clone(shared);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let due =
                Instant::now() + Duration::from_millis(reading.delay_ms.load(Ordering::SeqCst));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    let writing = Arc::clone(shared);
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
            writing.chunks.fetch_add(1, Ordering::SeqCst);
        }
        // The reader saw the end (or an error): pass the end on after the data.
        let _ = to.shutdown(Shutdown::Write);
    });
}
