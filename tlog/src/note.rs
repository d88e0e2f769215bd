//! C2SP signed notes (`signed-note.md`), verifier keys, checkpoints (`tlog-checkpoint.md`) and
//! cosignature/v1 (`tlog-cosignature.md`), written from the specifications.
//!
//! Strict as the specifications are: a note whose line by a trusted key (same name and key id)
//! fails to verify is refused whatever else it carries; lines of other keys are ignored; sizes
//! are decimal without sign or leading zero. Signing stays with whoever holds the key (a file
//! or a PKCS#11 token): this module formats lines around signature bytes.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Key types of `signed-note.md`.
pub const ED25519: u8 = 0x01;
pub const COSIGNATURE_V1: u8 = 0x04;

/// Why a note, a key, a checkpoint or a cosignature was refused: a sentence naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteError(pub String);

impl std::fmt::Display for NoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoteError {}

fn bad(msg: impl Into<String>) -> NoteError {
    NoteError(msg.into())
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
    pub fn parse(s: &str) -> Result<Self, NoteError> {
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

    /// [`Self::parse`], and the key must be of type `key_type` (a log's checkpoint key is
    /// [`ED25519`], a witness's cosignature key [`COSIGNATURE_V1`]).
    pub fn parse_of_type(s: &str, key_type: u8) -> Result<Self, NoteError> {
        let v = Self::parse(s)?;
        if v.key_type != key_type {
            return Err(bad(format!(
                "{s:?} is a key of type {:#04x}; a key of type {key_type:#04x} is needed here ({})",
                v.key_type,
                if key_type == COSIGNATURE_V1 {
                    "a witness's cosignature key"
                } else {
                    "a log's checkpoint key"
                }
            )));
        }
        Ok(v)
    }

    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, NoteError> {
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
    pub fn parse(note: &'a str) -> Result<Self, NoteError> {
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
    pub fn verify(&self, vkey: &Vkey) -> Result<(), NoteError> {
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
pub fn verify_note(note: &str, vkey: &str) -> Result<(), NoteError> {
    Note::parse(note)?.verify(&Vkey::parse(vkey)?)
}

/// Verifies `note` against the log key `vkey` (type 0x01) and parses its checkpoint body. The
/// note must carry a valid signature by that key, and every line of that key must verify;
/// lines of other keys are ignored, as signed-note says.
pub fn verify_checkpoint(vkey: &str, note: &str) -> Result<Checkpoint, NoteError> {
    let key = Vkey::parse_of_type(vkey, ED25519)?;
    let parsed = Note::parse(note)?;
    parsed.verify(&key)?;
    Checkpoint::parse(parsed.text)
}

/// One signature line, `— name base64(id ‖ signature)`, ending in its newline.
pub fn signature_line(name: &str, id: [u8; 4], signature: &[u8]) -> String {
    let mut blob = id.to_vec();
    blob.extend_from_slice(signature);
    format!("\u{2014} {name} {}\n", B64.encode(blob))
}

/// A checkpoint body (`tlog-checkpoint.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

impl Checkpoint {
    /// The body: origin, size and base64 root, each on its line; no extension lines.
    pub fn body(origin: &str, size: u64, root: &[u8; 32]) -> String {
        format!("{origin}\n{size}\n{}\n", B64.encode(root))
    }

    pub fn parse(text: &str) -> Result<Self, NoteError> {
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

/// What a cosignature/v1 signs: `cosignature/v1`, the time, and the checkpoint's body.
pub fn cosignature_message(time: u64, checkpoint_text: &str) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
    msg.extend_from_slice(checkpoint_text.as_bytes());
    msg
}

/// A cosignature line, `— name base64(id ‖ time ‖ signature)`, ending in its newline.
pub fn cosignature_line(name: &str, id: [u8; 4], time: u64, signature: &[u8; 64]) -> String {
    let mut raw = id.to_vec();
    raw.extend_from_slice(&time.to_be_bytes());
    raw.extend_from_slice(signature);
    format!("\u{2014} {name} {}\n", B64.encode(raw))
}

/// Whether the checkpoint note carries `vkey`'s cosignature: at least one line with its name
/// and key id, and every such line verifies (signed-note: a known key's failing signature
/// rejects the note). Err says which it was. Every check of a witness's cosignature goes here.
pub fn cosigned_by(checkpoint_note: &str, vkey: &Vkey) -> Result<(), String> {
    let note = Note::parse(checkpoint_note).map_err(|e| e.0)?;
    let theirs: Vec<&[u8]> = note
        .signatures
        .iter()
        .filter(|(name, raw)| *name == vkey.name && raw[..4] == vkey.id())
        .map(|(_, raw)| raw.as_slice())
        .collect();
    let bad = theirs
        .iter()
        .filter(|raw| cosignature_time(note.text, raw, vkey).is_err())
        .count();
    match (theirs.len(), bad) {
        (0, _) => Err(format!("no cosignature by {}", vkey.name)),
        (_, 0) => Ok(()),
        (n, bad) => Err(format!(
            "{bad} of {n} cosignature lines by {} do not verify: the note is refused",
            vkey.name
        )),
    }
}

/// Verifies a cosignature line by `vkey` on a checkpoint note's body: returns its timestamp.
pub fn verify_cosignature(
    checkpoint_note: &str,
    line: &str,
    vkey: &Vkey,
) -> Result<u64, NoteError> {
    let note = Note::parse(checkpoint_note)?;
    let bad = |m: &str| NoteError(m.to_owned());
    let rest = line
        .trim_end()
        .strip_prefix("\u{2014} ")
        .ok_or_else(|| bad("not a signature line"))?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or_else(|| bad("not a signature line"))?;
    let raw = B64
        .decode(sig)
        .map_err(|_| bad("the cosignature is not base64"))?;
    if name != vkey.name {
        return Err(bad("the cosignature is not by this witness key"));
    }
    cosignature_time(note.text, &raw, vkey)
}

/// The time of the cosignature `raw` (`id ‖ time ‖ signature`) by `vkey` on the checkpoint
/// body `text`, once its signature verifies.
fn cosignature_time(text: &str, raw: &[u8], vkey: &Vkey) -> Result<u64, NoteError> {
    let bad = |m: &str| NoteError(m.to_owned());
    if vkey.key_type != COSIGNATURE_V1 || raw.len() != 76 || raw[..4] != vkey.id() {
        return Err(bad("the cosignature is not by this witness key"));
    }
    let ts = u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes"));
    let msg = cosignature_message(ts, text);
    let pk = vkey.verifying_key()?;
    let s = ed25519_dalek::Signature::from_slice(&raw[12..]).map_err(|_| bad("a bad signature"))?;
    pk.verify_strict(&msg, &s)
        .map_err(|_| bad("the cosignature does not verify"))?;
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_key_id_is_reproduced() {
        // signed-note.md: example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k
        let raw = B64
            .decode("AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
            .unwrap();
        assert_eq!(
            hex::encode(key_id("example.com/foo", raw[0], &raw[1..])),
            "530d903a"
        );
        assert!(
            Vkey::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
                .is_ok()
        );
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
                crate::witness::Request::parse(&request).is_ok(),
                ok,
                "old {old:?}"
            );
        }
    }

    /// A checkpoint note signed by nobody in particular, and a witness key with a cosignature
    /// line on it.
    fn witness(seed: u8, name: &str, note: &str) -> (Vkey, String) {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let pk = sk.verifying_key().to_bytes();
        let id = key_id(name, COSIGNATURE_V1, &pk);
        let vkey = Vkey::parse(&format!(
            "{name}+{}+{}",
            hex::encode(id),
            B64.encode([&[COSIGNATURE_V1][..], &pk].concat())
        ))
        .unwrap();
        let text = &note[..=note.rfind("\n\n").unwrap()];
        let time = 1_780_000_000u64;
        let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
        msg.extend_from_slice(text.as_bytes());
        let sig = ed25519_dalek::Signer::sign(&sk, &msg).to_bytes();
        let raw = [&id[..], &time.to_be_bytes(), &sig].concat();
        (vkey, format!("\u{2014} {name} {}\n", B64.encode(raw)))
    }

    /// Every check of a witness's cosignature: one valid line, a forged or cut second line by
    /// the same key, lines of other witnesses, none at all.
    #[test]
    fn a_witness_cosigned_only_if_every_line_of_its_key_verifies() {
        let note = format!(
            "log.example/a\n5\n{}\n\n\u{2014} log.example/a AAAAAAAA\n",
            B64.encode([1u8; 32])
        );
        let (w, good) = witness(7, "w.example/1", &note);
        let (_, other) = witness(8, "w.example/2", &note);
        let forged = {
            let raw = B64
                .decode(good.trim_end().rsplit(' ').next().unwrap())
                .unwrap();
            let mut bad = raw.clone();
            bad[20] ^= 1;
            format!("\u{2014} w.example/1 {}\n", B64.encode(bad))
        };
        let cut = {
            let raw = B64
                .decode(good.trim_end().rsplit(' ').next().unwrap())
                .unwrap();
            format!("\u{2014} w.example/1 {}\n", B64.encode(&raw[..10]))
        };
        for (case, lines, ok) in [
            ("one valid line", vec![&good], true),
            ("valid, then forged", vec![&good, &forged], false),
            ("valid, then cut short", vec![&good, &cut], false),
            (
                "another witness's line beside it",
                vec![&other, &good],
                true,
            ),
            ("only another witness's line", vec![&other], false),
            ("none", vec![], false),
        ] {
            let with: String = note.clone() + &lines.into_iter().cloned().collect::<String>();
            assert_eq!(cosigned_by(&with, &w).is_ok(), ok, "{case}");
        }
    }
}
