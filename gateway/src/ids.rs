//! Random identifiers: a prefix naming the kind, then lowercase letters and digits.

use rand::Rng;

/// `agent_…`, `policy_…`, `channel_…`, `chg_…`, `trace_…`: 20 random characters after the prefix.
pub(crate) fn new_id(prefix: &str) -> String {
    assemble(prefix, &[])
}

/// `aud_…`: like [`new_id`], but the first 9 of the 20 characters are the time in milliseconds
/// (base 36), so identifiers made later sort later. Audit rows are keyed by id in a unique
/// index; random keys would land on a random index page each (one page written per row per
/// commit), time-ordered ones land on the index's last page.
pub(crate) fn new_time_ordered_id(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut time = [0u8; 9];
    base36(millis, &mut time);
    assemble(prefix, &time)
}

/// The characters of identifiers, in base-36 digit order.
const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `prefix_`, then `head`, then uniformly random base-36 digits up to 20 characters. The
/// random digits come from one 128-bit draw below 36^24 (< 2^125), whose base-36 digits are
/// uniform, instead of one rejection-sampled draw per digit.
fn assemble(prefix: &str, head: &[u8]) -> String {
    const BOUND: u128 = 36u128.pow(24);
    let mut rng = rand::thread_rng();
    let random = loop {
        let v: u128 = rng.r#gen::<u128>() >> 3;
        if v < BOUND {
            break v;
        }
    };
    let mut tail = [0u8; 20];
    tail[..head.len()].copy_from_slice(head);
    base36(random, &mut tail[head.len()..]);
    let mut id = String::with_capacity(prefix.len() + 1 + tail.len());
    id.push_str(prefix);
    id.push('_');
    id.extend(tail.iter().map(|&b| b as char));
    id
}

/// Writes `value` in base 36 into `out`, most significant digit first, keeping leading zeros
/// (and dropping digits that do not fit).
fn base36(mut value: u128, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 36) as usize];
        value /= 36;
    }
}

/// A random secret of `len` hex characters, for `--dev`.
pub(crate) fn new_secret(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    rand::thread_rng().fill(bytes.as_mut_slice());
    let mut s = hex::encode(bytes);
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_have_the_usual_shape_and_sort_by_creation_time() {
        let first = new_time_ordered_id("aud");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_time_ordered_id("aud");
        for id in [&first, &second] {
            let tail = id.strip_prefix("aud_").expect("prefix");
            assert_eq!(tail.len(), 20, "{id}");
            assert!(
                tail.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{id}"
            );
        }
        assert!(first < second, "{first} sorts after {second}");
        assert_ne!(new_time_ordered_id("aud"), new_time_ordered_id("aud"));
    }
}
