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
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut time = [0u8; 9];
    base36(millis, &mut time);
    assemble(prefix, &time)
}

/// The characters of identifiers, in base-36 digit order.
const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `prefix_`, then `head`, then uniformly random base-36 digits up to 20 characters. The
/// random digits come six at a time from one draw below 36^6 (which fits 32 bits), whose
/// base-36 digits are uniform: no 128-bit division, which took a tenth of an audit entry's
/// cost on the request's worker in `audit_rows`' profile.
fn assemble(prefix: &str, head: &[u8]) -> String {
    const SIX: u32 = 36u32.pow(6);
    let mut rng = rand::thread_rng();
    let mut tail = [0u8; 20];
    tail[..head.len()].copy_from_slice(head);
    for chunk in tail[head.len()..].chunks_mut(6) {
        let mut six = [0u8; 6];
        base36(u64::from(rng.gen_range(0..SIX)), &mut six);
        chunk.copy_from_slice(&six[..chunk.len()]);
    }
    let mut id = String::with_capacity(prefix.len() + 1 + tail.len());
    id.push_str(prefix);
    id.push('_');
    id.extend(tail.iter().map(|&b| b as char));
    id
}

/// Writes `value` in base 36 into `out`, most significant digit first, keeping leading zeros
/// (and dropping digits that do not fit).
fn base36(mut value: u64, out: &mut [u8]) {
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

    /// Every random position of an id takes each of the 36 digits about equally often: 20,000
    /// ids give each digit 556 times a position on average (standard deviation 23); the bounds
    /// are over 5.8 of them away, so all 720 counts fall inside in all but about one run in
    /// 250,000.
    #[test]
    fn every_random_position_takes_every_digit_about_equally_often() {
        let mut counts = [[0u32; 36]; 20];
        for _ in 0..20_000 {
            let id = new_id("x");
            for (i, b) in id["x_".len()..].bytes().enumerate() {
                let digit = DIGITS
                    .iter()
                    .position(|&d| d == b)
                    .expect("a base-36 digit");
                counts[i][digit] += 1;
            }
        }
        for (i, position) in counts.iter().enumerate() {
            for (digit, &n) in position.iter().enumerate() {
                assert!(
                    (420..=700).contains(&n),
                    "position {i}, digit {}: {n} times in 20,000 ids",
                    DIGITS[digit] as char
                );
            }
        }
    }
}
