//! A site witness for a disconnected workstation (`meshguard-witness`): checkpoints and
//! consistency proofs arrive on removable media as the body of a C2SP `tlog-witness`
//! add-checkpoint request; the witness checks the log's signature with the log key it trusts,
//! checks consistency from the last checkpoint it cosigned for that origin, records the new one
//! and answers with a C2SP `tlog-cosignature` (cosignature/v1, Ed25519, its own key). Checking
//! and recording happen under one lock, and the state is written atomically: a checkpoint is
//! cosigned only once it is recorded.
//!
//! A witness never cosigns two inconsistent views of one log: that is what stops the operator,
//! who holds the log key, from rewriting history and signing it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

use crate::note::{COSIGNATURE_V1, Checkpoint, Note, Vkey, empty_root, verify_consistency};
use crate::{BundleError, fsx};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const STATE: &str = "witness.json";

/// What the witness keeps: its name, and per origin the trusted log key and the last
/// checkpoint it cosigned.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub name: String,
    /// This witness's verifier key (type 0x04), what sites configure to trust it.
    pub vkey: String,
    pub logs: BTreeMap<String, Log>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Log {
    pub vkey: String,
    pub size: u64,
    /// base64 root of `size` (the empty tree's root at 0).
    pub root: String,
    /// The last checkpoint cosigned, as received.
    #[serde(default)]
    pub checkpoint: Option<String>,
    #[serde(default)]
    pub cosigned_at: Option<u64>,
}

/// Why a request is refused, with the tlog-witness status it stands for.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "unknown origin {0:?}: this witness does not follow that log (add it with `meshguard-witness trust`)"
    )]
    UnknownOrigin(String),
    #[error("{0}")]
    BadSignature(String),
    #[error("old size {old} is larger than the checkpoint's size {new}")]
    OldTooLarge { old: u64, new: u64 },
    #[error(
        "old size {sent} is not the size this witness last cosigned ({stored}); send a proof from {stored}"
    )]
    Stale { sent: u64, stored: u64 },
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    Malformed(String),
}

impl Refusal {
    /// The HTTP status of `tlog-witness.md` this refusal mirrors.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownOrigin(_) => 404,
            Self::BadSignature(_) => 403,
            Self::OldTooLarge { .. } | Self::Malformed(_) => 400,
            Self::Stale { .. } => 409,
            Self::Inconsistent(_) => 422,
        }
    }
}

/// A witness: its state directory and signing key.
#[derive(Debug)]
pub struct Witness {
    dir: PathBuf,
    key: ed25519_dalek::SigningKey,
}

impl Witness {
    pub fn new(dir: &Path, key: ed25519_dalek::SigningKey) -> Self {
        Self {
            dir: dir.to_owned(),
            key,
        }
    }

    pub fn load_state(dir: &Path) -> Result<State, BundleError> {
        let p = dir.join(STATE);
        let bytes = std::fs::read(&p).map_err(|e| BundleError::io("read", &p, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            BundleError::Input(format!("{} is not a witness state file: {e}", p.display()))
        })
    }

    pub fn save_state(dir: &Path, state: &State) -> Result<(), BundleError> {
        let mut b = serde_json::to_vec_pretty(state).expect("serializes");
        b.push(b'\n');
        fsx::write_atomic(&dir.join(STATE), &b)
    }

    /// This witness's verifier key (type 0x04, cosignature/v1).
    pub fn vkey(&self, name: &str) -> Vkey {
        Vkey {
            name: name.to_owned(),
            key_type: COSIGNATURE_V1,
            key: self.key.verifying_key().to_bytes(),
        }
    }

    /// Checks one add-checkpoint request body and, if it holds, records the checkpoint and
    /// returns the cosignature line (ending in a newline). `now`: seconds since 1970.
    pub fn add_checkpoint(&self, request: &str, now: u64) -> Result<String, WitnessError> {
        let _lock = fsx::lock_exclusive(&self.dir.join(".lock"))?;
        let mut state = Self::load_state(&self.dir)?;
        let (old, proof, signed) = parse_request(request)?;
        let note = Note::parse(signed).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let cp = Checkpoint::parse(note.text).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let log = state
            .logs
            .get(&cp.origin)
            .cloned()
            .ok_or_else(|| Refusal::UnknownOrigin(cp.origin.clone()))?;
        let vkey = Vkey::parse(&log.vkey)?;
        note.verify(&vkey)
            .map_err(|e| Refusal::BadSignature(format!("{e}; the checkpoint is not the log's")))?;
        if old > cp.size {
            return Err(Refusal::OldTooLarge { old, new: cp.size }.into());
        }
        if old != log.size {
            return Err(Refusal::Stale {
                sent: old,
                stored: log.size,
            }
            .into());
        }
        let stored: [u8; 32] = B64
            .decode(&log.root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| Refusal::Malformed("the stored root is damaged".into()))?;
        if cp.size == 0 && cp.root != empty_root() {
            return Err(Refusal::Inconsistent(
                "a checkpoint of size 0 must have the empty tree's root".into(),
            )
            .into());
        }
        if old == 0 && !proof.is_empty() {
            return Err(Refusal::Inconsistent("a proof was sent with old 0".into()).into());
        }
        if old > 0 && !verify_consistency(old, cp.size, &proof, &stored, &cp.root) {
            return Err(Refusal::Inconsistent(format!(
                "the log of {} entries is not an extension of the {old} this witness cosigned for {}: the log was rewritten, or the proof is wrong",
                cp.size, cp.origin
            ))
            .into());
        }
        // Sign: cosignature/v1, time, the whole checkpoint body.
        let mut msg = format!("cosignature/v1\ntime {now}\n").into_bytes();
        msg.extend_from_slice(note.text.as_bytes());
        let sig = self.key.sign(&msg);
        let me = self.vkey(&state.name);
        let mut raw = me.id().to_vec();
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        let line = format!("\u{2014} {} {}\n", state.name, B64.encode(raw));
        // Recorded before it is answered.
        state.logs.insert(
            cp.origin.clone(),
            Log {
                size: cp.size,
                root: B64.encode(cp.root),
                checkpoint: Some(signed.to_owned()),
                cosigned_at: Some(now),
                ..log
            },
        );
        Self::save_state(&self.dir, &state)?;
        Ok(line)
    }
}

/// A refusal, or a failure of the witness itself (its files).
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Local(#[from] BundleError),
}

/// A tlog-witness request body: `old <size>`, proof lines, a blank line, the signed checkpoint.
pub fn parse_request(body: &str) -> Result<(u64, Vec<[u8; 32]>, &str), Refusal> {
    let malformed = |m: &str| Refusal::Malformed(format!("not a tlog-witness request: {m}"));
    let (first, rest) = body
        .split_once('\n')
        .ok_or_else(|| malformed("no old line"))?;
    let old: u64 = first
        .strip_prefix("old ")
        .and_then(meshguard_common::decimal::parse_u64)
        .ok_or_else(|| malformed("the first line is not `old <size>`"))?;
    let (proof_text, checkpoint) = if let Some(r) = rest.strip_prefix('\n') {
        ("", r)
    } else {
        rest.split_once("\n\n")
            .ok_or_else(|| malformed("no blank line after the proof"))?
    };
    let mut proof = Vec::new();
    for l in proof_text.lines() {
        let h: [u8; 32] = B64
            .decode(l)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| malformed("a proof line is not a base64 hash"))?;
        proof.push(h);
    }
    if proof.len() > 63 {
        return Err(malformed("more than 63 proof lines"));
    }
    Ok((old, proof, checkpoint))
}

/// Whether the checkpoint note carries `vkey`'s cosignature: at least one line with its name
/// and key id, and every such line verifies (signed-note: a known key's failing signature
/// rejects the note). Err says which it was. Every check of a witness's cosignature goes here.
pub fn cosigned_by(checkpoint_note: &str, vkey: &Vkey) -> Result<(), String> {
    let theirs: Vec<&str> = checkpoint_note
        .lines()
        .filter(|l| {
            l.strip_prefix(&format!("\u{2014} {} ", vkey.name))
                .and_then(|b64| B64.decode(b64).ok())
                .is_some_and(|raw| raw.len() >= 4 && raw[..4] == vkey.id())
        })
        .collect();
    let bad = theirs
        .iter()
        .filter(|l| verify_cosignature(checkpoint_note, l, vkey).is_err())
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
) -> Result<u64, BundleError> {
    let note = Note::parse(checkpoint_note)?;
    let bad = |m: &str| BundleError::Integrity(m.to_owned());
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
    if name != vkey.name || raw.len() != 76 || raw[..4] != vkey.id() {
        return Err(bad("the cosignature is not by this witness key"));
    }
    let ts = u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes"));
    let mut msg = format!("cosignature/v1\ntime {ts}\n").into_bytes();
    msg.extend_from_slice(note.text.as_bytes());
    let pk = ed25519_dalek::VerifyingKey::from_bytes(&vkey.key).map_err(|_| bad("a bad key"))?;
    let s = ed25519_dalek::Signature::from_slice(&raw[12..]).map_err(|_| bad("a bad signature"))?;
    pk.verify_strict(&msg, &s)
        .map_err(|_| bad("the cosignature does not verify"))?;
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint note signed by nobody in particular, and a witness key with a cosignature
    /// line on it.
    fn witness(seed: u8, name: &str, note: &str) -> (Vkey, String) {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let pk = sk.verifying_key().to_bytes();
        let id = crate::note::key_id(name, COSIGNATURE_V1, &pk);
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
