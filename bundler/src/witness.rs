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

use crate::{BundleError, fsx};
use meshguard_tlog::merkle::{empty_root, verify_consistency};
use meshguard_tlog::note::{
    COSIGNATURE_V1, Checkpoint, Note, Vkey, cosignature_line, cosignature_message,
};
use meshguard_tlog::witness::Request;

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
        let Request {
            old,
            proof,
            checkpoint: signed,
        } = Request::parse(request).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let note = Note::parse(signed).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let cp = Checkpoint::parse(note.text).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let log = state
            .logs
            .get(&cp.origin)
            .cloned()
            .ok_or_else(|| Refusal::UnknownOrigin(cp.origin.clone()))?;
        let vkey = Vkey::parse(&log.vkey).map_err(|e| {
            BundleError::Input(format!("{STATE}: the log key of {}: {e}", cp.origin))
        })?;
        note.verify(&vkey)
            .map_err(|e| Refusal::BadSignature(format!("{e}; the checkpoint is not the log's")))?;
        extends(&log, old, &proof, &cp)?;
        // Sign: cosignature/v1, time, the whole checkpoint body.
        let sig = self.key.sign(&cosignature_message(now, note.text));
        let me = self.vkey(&state.name);
        let line = cosignature_line(&state.name, me.id(), now, &sig.to_bytes());
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

/// Whether `cp` extends what the witness last cosigned for its log (`log`): the request's `old`
/// is that size, and its `proof` shows the checkpoint's tree holds that one. Else the refusal
/// naming what does not hold, in the order checked.
fn extends(log: &Log, old: u64, proof: &[[u8; 32]], cp: &Checkpoint) -> Result<(), WitnessError> {
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
    if old > 0 && !verify_consistency(old, cp.size, proof, &stored, &cp.root) {
        return Err(Refusal::Inconsistent(format!(
            "the log of {} entries is not an extension of the {old} this witness cosigned for {}: the log was rewritten, or the proof is wrong",
            cp.size, cp.origin
        ))
        .into());
    }
    Ok(())
}

/// A refusal, or a failure of the witness itself (its files).
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Local(#[from] BundleError),
}
