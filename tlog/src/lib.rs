//! The transparency log's formats, in one place for every part of the product that writes or
//! checks the audit log: the gateway (which writes it), the witness, evidence export and
//! verify, and the audit archive.
//!
//! - [`merkle`]: RFC 6962 / RFC 9162 hashing, the frontier of a growing tree, inclusion and
//!   consistency proofs and their verification.
//! - [`tiles`]: C2SP tlog-tiles: the log's tiles and entry bundles on disk, read and written.
//! - [`note`]: C2SP signed notes, verifier keys, checkpoints (`tlog-checkpoint`), and
//!   cosignature/v1 (`tlog-cosignature`).
//! - [`witness`]: the tlog-witness `add-checkpoint` request.
//!
//! Parsing is strict as the specifications say: numbers are decimal without sign or leading
//! zero, and every signature line of a trusted key must verify. The independent check is not
//! here: the tests read the gateway's tiles and notes with Go's `sumdb/tlog` and `sumdb/note`.
//!
//! Written by hand: no crate in our dependency set reads C2SP notes or tiles, and the RFC 6962
//! crates that exist either are not RFC 6962 (`rs_merkle`) or reject an old size of 0
//! (`ct-merkle`); the algorithms are short and tested against brute-force trees.

pub mod merkle;
pub mod note;
pub mod tiles;
pub mod witness;
