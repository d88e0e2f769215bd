//! Random identifiers: a prefix naming the kind, then lowercase letters and digits.

use rand::Rng;

/// `agent_…`, `policy_…`, `channel_…`, `chg_…`, `trace_…`: 20 random characters after the prefix.
pub(crate) fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    push_random_digits(&mut id, 20);
    id
}

/// Appends `n` (at most 24) uniformly random base-36 digits, drawn from one 128-bit random
/// number (36^24 < 2^125, so the digits of a value below 36^24 are uniform) instead of one
/// rejection-sampled draw per digit.
fn push_random_digits(id: &mut String, n: u32) {
    const BOUND: u128 = 36u128.pow(24);
    let mut rng = rand::thread_rng();
    let mut value = loop {
        let v: u128 = rng.r#gen::<u128>() >> 3;
        if v < BOUND {
            break v;
        }
    };
    for _ in 0..n.min(24) {
        id.push(DIGITS[(value % 36) as usize] as char);
        value /= 36;
    }
}

/// The characters of identifiers, in base-36 digit order.
const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `aud_…`: like [`new_id`], but the first 9 of the 20 characters are the time in milliseconds
/// (base 36), so identifiers made later sort later. Audit rows are keyed by id in a unique
/// index; random keys would land on a random index page each (one page written per row per
/// commit), time-ordered ones land on the index's last page.
pub(crate) fn new_time_ordered_id(prefix: &str) -> String {
    let mut millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut time = [b'0'; 9];
    for slot in time.iter_mut().rev() {
        *slot = DIGITS[(millis % 36) as usize];
        millis /= 36;
    }
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    id.extend(time.iter().map(|&b| b as char));
    push_random_digits(&mut id, 11);
    id
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
