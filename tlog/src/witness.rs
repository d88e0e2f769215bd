//! The tlog-witness `add-checkpoint` request (C2SP `tlog-witness.md`): `old <size>`, the
//! consistency proof's hashes one per line, a blank line, then the signed checkpoint.

use base64::Engine as _;

use crate::note::NoteError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The longest consistency proof a request may carry (a tree of 2^64 leaves needs fewer).
const MAX_PROOF: usize = 63;

/// A parsed request; the checkpoint is still to be verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The size of the checkpoint the witness last cosigned, as the log believes it.
    pub old: u64,
    pub proof: Vec<[u8; 32]>,
    /// The signed checkpoint note, as sent.
    pub checkpoint: &'a str,
}

impl<'a> Request<'a> {
    pub fn parse(body: &'a str) -> Result<Self, NoteError> {
        let malformed = |m: &str| NoteError(format!("not a tlog-witness request: {m}"));
        let (first, rest) = body
            .split_once('\n')
            .ok_or_else(|| malformed("no old line"))?;
        let old = first
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
        if proof.len() > MAX_PROOF {
            return Err(malformed("more than 63 proof lines"));
        }
        Ok(Self {
            old,
            proof,
            checkpoint,
        })
    }
}
