//! C2SP signed notes, checkpoints and RFC 9162 consistency proofs, written from the
//! specifications (`signed-note.md`, `tlog-checkpoint.md`, `tlog-cosignature.md`, RFC 9162
//! §2.1.4.2) for the tools that check a log they did not write: the site install's smoke test
//! and the site witness. Independent of the gateway's own implementation on purpose.
//!
//! Written by hand: no crate in our set reads notes; `signed_note`/`tlog_tiles` would add a
//! second copy of the hashing stack for some 150 lines.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::BundleError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Key types of `signed-note.md`.
pub const ED25519: u8 = 0x01;
pub const COSIGNATURE_V1: u8 = 0x04;

fn bad(msg: impl Into<String>) -> BundleError {
    BundleError::Integrity(msg.into())
}

/// A verifier key `name+hash+base64(type || key)` (Ed25519 kinds only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vkey {
    pub name: String,
    pub key_type: u8,
    pub key: [u8; 32],
}

/// SHA-256(name || 0x0A || type || key)[0:4].
pub fn key_id(name: &str, key_type: u8, key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([key_type]);
    h.update(key);
    h.finalize()[..4].try_into().expect("4 bytes")
}

impl Vkey {
    pub fn parse(s: &str) -> Result<Self, BundleError> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("{s:?} is not a verifier key (name+hash+key)")));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad(format!("{s:?}: the key name is empty or has spaces")));
        }
        let raw = B64
            .decode(key)
            .map_err(|_| bad(format!("{s:?}: the key is not base64")))?;
        if raw.len() != 33 || !matches!(raw[0], ED25519 | COSIGNATURE_V1) {
            return Err(bad(format!(
                "{s:?} is not an Ed25519 (0x01) or Ed25519 cosignature (0x04) key"
            )));
        }
        let v = Self {
            name: name.to_owned(),
            key_type: raw[0],
            key: raw[1..].try_into().expect("32 bytes"),
        };
        if hex::encode(v.id()) != hash {
            return Err(bad(format!(
                "{s:?}: the hash does not match the name and key"
            )));
        }
        Ok(v)
    }

    pub fn id(&self) -> [u8; 4] {
        key_id(&self.name, self.key_type, &self.key)
    }

    pub fn encode(&self) -> String {
        let mut raw = vec![self.key_type];
        raw.extend_from_slice(&self.key);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id()),
            B64.encode(raw)
        )
    }

    fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, BundleError> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.key)
            .map_err(|_| bad(format!("{} is not a valid Ed25519 key", self.name)))
    }
}

/// A signed note: the signed text (ending in its newline) and its signature lines.
#[derive(Debug)]
pub struct Note<'a> {
    pub text: &'a str,
    /// (name, decoded signature: key id || signature bytes)
    pub signatures: Vec<(String, Vec<u8>)>,
}

impl<'a> Note<'a> {
    pub fn parse(note: &'a str) -> Result<Self, BundleError> {
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("the note has no blank line before its signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        let mut signatures = Vec::new();
        for line in sigs.lines() {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad(format!("{line:?} is not a signature line")))?;
            let (name, sig) = rest
                .split_once(' ')
                .ok_or_else(|| bad(format!("{line:?} is not a signature line")))?;
            let sig = B64
                .decode(sig)
                .map_err(|_| bad(format!("the signature of {name} is not base64")))?;
            if sig.len() < 5 {
                return Err(bad(format!(
                    "the signature of {name} is not a key id and a signature"
                )));
            }
            signatures.push((name.to_owned(), sig));
        }
        if signatures.is_empty() {
            return Err(bad("the note carries no signature"));
        }
        Ok(Self { text, signatures })
    }

    /// Verifies the signature of `vkey` (type 0x01) on the note: one must be there, and every
    /// line with its name and key id must verify (signed-note: a signature from a known key
    /// that fails rejects the whole note); lines of other keys are ignored.
    pub fn verify(&self, vkey: &Vkey) -> Result<(), BundleError> {
        let id = vkey.id();
        let pk = vkey.verifying_key()?;
        let mut verified = false;
        for (name, sig) in &self.signatures {
            if *name != vkey.name || sig[..4] != id {
                continue;
            }
            let valid = sig.len() == 68
                && ed25519_dalek::Signature::from_slice(&sig[4..])
                    .is_ok_and(|s| pk.verify_strict(self.text.as_bytes(), &s).is_ok());
            if !valid {
                return Err(bad(format!(
                    "a signature line of {} does not verify: the note is refused",
                    vkey.name
                )));
            }
            verified = true;
        }
        if verified {
            Ok(())
        } else {
            Err(bad(format!(
                "the note carries no signature by {}",
                vkey.name
            )))
        }
    }
}

/// Verifies a C2SP signed note against one Ed25519 verifier key.
pub fn verify_note(note: &str, vkey: &str) -> Result<(), BundleError> {
    Note::parse(note)?.verify(&Vkey::parse(vkey)?)
}

/// A checkpoint body (`tlog-checkpoint.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

impl Checkpoint {
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        let mut lines = text.lines();
        let origin = lines.next().filter(|o| !o.is_empty());
        let size = lines.next();
        let root = lines.next();
        let (Some(origin), Some(size), Some(root)) = (origin, size, root) else {
            return Err(bad("a checkpoint has an origin, a size and a root hash"));
        };
        let size = meshguard_common::decimal::parse_u64(size).ok_or_else(|| {
            bad(format!(
                "checkpoint size {size:?} is not a decimal number without sign or leading zeros"
            ))
        })?;
        let root: [u8; 32] = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the checkpoint's root hash is not 32 base64 bytes"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> [u8; 32] {
    Sha256::digest(b"").into()
}

/// RFC 9162 §2.1.1: the hash of a leaf, `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// RFC 9162 §2.1.1: the hash of an interior node, `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// RFC 9162 §2.1.4.2: the tree of `m` entries with root `old` is a prefix of the tree of `n`
/// entries with root `new`.
pub fn verify_consistency(
    m: u64,
    n: u64,
    proof: &[[u8; 32]],
    old: &[u8; 32],
    new: &[u8; 32],
) -> bool {
    if m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && old == new;
    }
    if m == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<[u8; 32]> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(*old);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node(c, &fr);
            sr = node(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old && sr == *new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> [u8; 32] {
        leaf_hash(&i.to_be_bytes())
    }

    /// MTH of leaves[lo..hi], RFC 6962 §2.1.
    fn mth(l: &[[u8; 32]]) -> [u8; 32] {
        match l.len() {
            0 => empty_root(),
            1 => l[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node(&mth(&l[..k]), &mth(&l[k..]))
            }
        }
    }

    /// PROOF(m, D[n]) by the RFC's recursive definition.
    fn sub(m: usize, l: &[[u8; 32]], complete: bool) -> Vec<[u8; 32]> {
        let n = l.len();
        if m == n {
            return if complete { vec![] } else { vec![mth(l)] };
        }
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        if m <= k {
            let mut p = sub(m, &l[..k], complete);
            p.push(mth(&l[k..]));
            p
        } else {
            let mut p = sub(m - k, &l[k..], false);
            p.push(mth(&l[..k]));
            p
        }
    }

    #[test]
    fn consistency_proofs_verify_for_every_pair_below_33_and_fail_when_altered() {
        let leaves: Vec<[u8; 32]> = (0..33).map(leaf).collect();
        for n in 1..=32usize {
            for m in 1..n {
                let proof = sub(m, &leaves[..n], true);
                let (old, new) = (mth(&leaves[..m]), mth(&leaves[..n]));
                assert!(
                    verify_consistency(m as u64, n as u64, &proof, &old, &new),
                    "{m} -> {n}"
                );
                let mut bad = proof.clone();
                bad[0][0] ^= 1;
                assert!(!verify_consistency(m as u64, n as u64, &bad, &old, &new));
                assert!(!verify_consistency(m as u64, n as u64, &proof, &new, &old));
            }
        }
    }

    #[test]
    fn vkeys_round_trip_and_the_hash_is_checked() {
        let v = Vkey {
            name: "witness.example/w1".into(),
            key_type: COSIGNATURE_V1,
            key: [7; 32],
        };
        assert_eq!(Vkey::parse(&v.encode()).unwrap(), v);
        let mut wrong = v.encode();
        wrong.replace_range(
            wrong.find('+').unwrap() + 1..wrong.find('+').unwrap() + 3,
            "zz",
        );
        assert!(Vkey::parse(&wrong).is_err());
    }

    /// A note signed by `name`'s key from `seed`, with `extra` signature lines after it.
    fn note_with(extra: &[String]) -> (String, Vkey) {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let name = "log.example/a";
        let vkey = Vkey {
            name: name.to_owned(),
            key_type: ED25519,
            key: sk.verifying_key().to_bytes(),
        };
        let text = format!("{name}\n5\n{}\n", B64.encode([1u8; 32]));
        let mut blob = vkey.id().to_vec();
        blob.extend_from_slice(&ed25519_dalek::Signer::sign(&sk, text.as_bytes()).to_bytes());
        let mut note = format!("{text}\n\u{2014} {name} {}\n", B64.encode(blob));
        for l in extra {
            note.push_str(l);
        }
        (note, vkey)
    }

    /// signed-note: every line with the known key's name and id must verify (else the whole
    /// note is refused); lines of other keys are ignored; one valid line must be there.
    #[test]
    fn a_known_keys_failing_line_refuses_the_note_and_other_keys_are_ignored() {
        let (_, vkey) = note_with(&[]);
        let id = vkey.id();
        let line = |name: &str, blob: Vec<u8>| format!("\u{2014} {name} {}\n", B64.encode(blob));
        let with_id = |rest: &[u8]| [&id[..], rest].concat();
        let other_id = |rest: &[u8]| [&[0u8, 1, 2, 3][..], rest].concat();
        for (case, extra, ok) in [
            ("alone", vec![], true),
            (
                "a second, forged line by the same key",
                vec![line("log.example/a", with_id(&[9u8; 64]))],
                false,
            ),
            (
                "a second line by the same key of the wrong length",
                vec![line("log.example/a", with_id(&[9u8; 10]))],
                false,
            ),
            (
                "a line of another name with the same id",
                vec![line("log.example/b", with_id(&[9u8; 64]))],
                true,
            ),
            (
                "a line of the same name with another id",
                vec![line("log.example/a", other_id(&[9u8; 64]))],
                true,
            ),
        ] {
            let (note, _) = note_with(&extra);
            let parsed = Note::parse(&note).unwrap();
            assert_eq!(parsed.verify(&vkey).is_ok(), ok, "{case}");
        }
        // Only another key's line: no signature by the known key.
        let (note, _) = note_with(&[]);
        let foreign = note.replace("\u{2014} log.example/a ", "\u{2014} log.example/b ");
        assert!(Note::parse(&foreign).unwrap().verify(&vkey).is_err());
        // A line too short to hold a key id and a signature is malformed.
        let (note, _) = note_with(&[line("x.example", vec![1, 2, 3])]);
        assert!(Note::parse(&note).is_err());
    }

    /// Sizes have one spelling: `+12` and `09` are not 12 and 9.
    #[test]
    fn checkpoint_sizes_and_witness_requests_take_only_plain_decimals() {
        let root = B64.encode([1u8; 32]);
        for (size, ok) in [
            ("12", true),
            ("0", true),
            ("+12", false),
            ("09", false),
            (" 9", false),
        ] {
            let parsed = Checkpoint::parse(&format!("o.example\n{size}\n{root}\n"));
            assert_eq!(parsed.is_ok(), ok, "{size:?}");
        }
        let (note, _) = note_with(&[]);
        for (old, ok) in [
            ("3", true),
            ("0", true),
            ("+3", false),
            ("03", false),
            ("3 ", false),
        ] {
            let request = format!("old {old}\n\n{note}");
            assert_eq!(
                crate::witness::parse_request(&request).is_ok(),
                ok,
                "old {old:?}"
            );
        }
    }
}
