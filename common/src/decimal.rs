//! Decimal numbers as the C2SP formats write them (checkpoint sizes, `old N` in a tlog-witness
//! request, a 409's size): ASCII digits only, no sign, no leading zero unless the number is 0.
//! Rust's `str::parse::<u64>` also takes `+12` and `0012`, which would let two texts name the
//! same number: a signed text must have one reading.

/// The number `s` spells in the strict form, or None.
pub fn parse_u64(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::parse_u64;

    #[test]
    fn only_the_one_spelling_of_a_number_is_read() {
        for (text, want) in [
            ("0", Some(0)),
            ("12", Some(12)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("+12", None),
            ("-0", None),
            ("09", None),
            ("00", None),
            ("", None),
            (" 12", None),
            ("12 ", None),
            ("1_2", None),
            ("١٢", None),
            ("0x1", None),
        ] {
            assert_eq!(parse_u64(text), want, "{text:?}");
        }
    }
}
