//! Acceptance tests: the real Terraform CLI (1.15.5 and 1.0.3) drives the provider, installed
//! from a packed filesystem mirror with no network, against the real gateway on 127.0.0.1.

mod complete_example;
mod errors;
mod examples;
mod harness;
mod mirror;
mod regulated;
mod tls;
