//! Integration tests: the real `meshguard-gateway` binary on 127.0.0.1, driven over HTTP.

mod agents;
mod alerting;
mod audit;
mod auth;
mod bounds;
mod changes;
mod channels;
mod clock;
mod cluster;
mod dataplane;
mod egress;
mod failover;
mod harness;
mod keys;
mod licensing;
mod lifecycle;
mod load;
mod network_chaos;
#[cfg(feature = "otel")]
mod otel;
mod policies;
mod probe;
mod security;
mod sidecar;
mod tls;
