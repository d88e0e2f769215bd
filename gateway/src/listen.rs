//! Accepting connections, bounded: every listener of the gateway (HTTP, HTTPS, the egress
//! proxy) admits at most `MAX_CONNECTIONS` connections at once and `MAX_CONNECTIONS_PER_CLIENT`
//! from one address, and gives a request head `HTTP_HEADER_TIMEOUT_SECONDS` to arrive whole
//! (the same time an idle kept-alive connection has to send its next one). A connection over a
//! cap is closed at once, and accept errors (out of file descriptors) back off instead of
//! spinning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of every listener (settings of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_client: usize,
    pub header_timeout: Duration,
    /// How long a forwarded call's body may take to arrive whole (`HTTP_BODY_TIMEOUT_SECONDS`).
    pub body_timeout: Duration,
}

/// Counts the connections a listener holds, in all and per client address.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: Limits,
    total: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; its place is given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
    _total: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self
            .gate
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_client: Mutex::default(),
        })
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// A place for a connection from `ip`, or why there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let total = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| "MAX_CONNECTIONS reached")?;
        let mut held = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(ip).or_default();
        if *n >= self.limits.max_per_client {
            return Err("MAX_CONNECTIONS_PER_CLIENT reached for this address");
        }
        *n += 1;
        Ok(Admitted {
            gate: Arc::clone(self),
            ip,
            _total: total,
        })
    }
}

/// Accepts connections on `listener` until `stop` resolves, handing each admitted one to
/// `serve` on a task of its own.
pub(crate) async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    gate: &Arc<Gate>,
    stop: impl std::future::Future<Output = ()>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Admitted) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: nothing to accept until a connection ends.
                tracing::warn!(error = %e, "cannot accept a connection; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match gate.admit(peer.ip()) {
            Ok(admitted) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp, peer, admitted));
            }
            Err(why) => {
                // Once a minute at most: a flood must not also flood the log.
                if refused_logged.elapsed() > Duration::from_secs(60) {
                    refused_logged = std::time::Instant::now();
                    tracing::warn!(%peer, reason = why, "connection refused (further refusals this minute are not logged)");
                }
                drop(tcp);
            }
        }
    }
}

/// An HTTP/1.1 connection builder with the gateway's header timeout.
pub(crate) fn http1(limits: Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(256 * 1024);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_given_back() {
        let gate = Gate::new(Limits {
            max_connections: 3,
            max_per_client: 2,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_err(), "two per address");
        let _b1 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_err(), "three in all");
        drop(a1);
        assert!(
            gate.admit(b).is_ok(),
            "a closed connection gives its place back"
        );
    }
}
