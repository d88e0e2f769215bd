//! Random identifiers: a prefix naming the kind, then lowercase letters and digits.

use rand::Rng;
use rand::distributions::Alphanumeric;

/// `agent_…`, `policy_…`, `channel_…`, `chg_…`, `trace_…`: 20 random characters after the prefix.
pub(crate) fn new_id(prefix: &str) -> String {
    let tail: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .map(|b| (b as char).to_ascii_lowercase())
        .take(20)
        .collect();
    format!("{prefix}_{tail}")
}

/// A random secret of `len` hex characters, for `--dev`.
pub(crate) fn new_secret(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    rand::thread_rng().fill(bytes.as_mut_slice());
    let mut s = hex::encode(bytes);
    s.truncate(len);
    s
}
