//! The run of audit entries, scanned in one pass that export and verify share: each line is
//! parsed once, and from that one parse come its place in the sequence, its chain hash, its
//! Merkle leaf, the assessment's facts and the decision counts; the bytes it was parsed from
//! make the file's digest.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::{Decisions, Denial, assess};
use crate::audit_archive::Line;
use meshguard_tlog::merkle::{RunHashes, leaf_hash};

/// The file of the run in the bundle.
pub(super) const ENTRIES: &str = "audit/entries.jsonl";

/// A scan in progress, fed the lines in file order.
pub(super) struct Scan {
    first_seq: u64,
    expected: u64,
    heads: BTreeMap<String, String>,
    run: RunHashes,
    problem: Option<String>,
    facts: assess::Facts,
    decisions: Decisions,
    list_denials: bool,
    sha: Sha256,
    size: u64,
    /// The entry's canonical form, written here entry after entry (one buffer, not a new
    /// string each).
    body: String,
}

/// What the scan found.
pub(super) struct Scanned {
    /// The run's Merkle leaves as they streamed in (its subtrees, not every leaf: the root is
    /// rebuilt from them and the range proof).
    pub(super) run: RunHashes,
    /// The "audit entries" check: every entry in sequence and its chain hash intact.
    pub(super) result: Result<String, String>,
    pub(super) facts: assess::Facts,
    pub(super) decisions: Decisions,
    /// (hex SHA-256, size) of the bytes scanned; None when the file could not be read whole.
    pub(super) digest: Option<(String, u64)>,
}

impl Scan {
    /// A scan of the run that starts at `first_seq`, adding to `facts` (which hold the
    /// settings in force before the run, if known); lists each denial if `list_denials`.
    pub(super) fn new(first_seq: u64, facts: assess::Facts, list_denials: bool) -> Self {
        Scan {
            first_seq,
            expected: first_seq,
            heads: BTreeMap::new(),
            // Entry `seq` is leaf `seq - 1` (a run claimed to start at seq 0 fails its range
            // proof, whose index is checked against the manifest).
            run: RunHashes::new(first_seq.saturating_sub(1)),
            problem: None,
            facts,
            decisions: Decisions::default(),
            list_denials,
            sha: Sha256::new(),
            size: 0,
            body: String::new(),
        }
    }

    /// The bytes of the file as read (line ends included): its digest.
    pub(super) fn bytes(&mut self, raw: &[u8]) {
        self.sha.update(raw);
        self.size += raw.len() as u64;
    }

    /// Records what is wrong with the run, if nothing was before.
    pub(super) fn problem(&mut self, p: String) {
        self.problem.get_or_insert(p);
    }

    /// One entry of the run, in order.
    pub(super) fn entry(&mut self, line: &Line) {
        if line.seq != self.expected {
            self.problem(format!(
                "entry {} is missing (the next line is entry {})",
                self.expected, line.seq
            ));
        }
        self.expected = line.seq + 1;
        let mut buf = std::mem::take(&mut self.body);
        let body = canonical(&line.entry, &mut buf);
        if let Some(problem) = chain_link(&self.heads, line, body) {
            self.problem(problem);
        }
        match self.heads.get_mut(&line.source) {
            Some(head) => head.clone_from(&line.hash),
            None => {
                self.heads.insert(line.source.clone(), line.hash.clone());
            }
        }
        self.run.push(leaf_hash(body.as_bytes()));
        self.facts.entry(line.seq, &line.source, body, &line.entry);
        self.body = buf;
        let scan_ephi = self.facts.scan_ephi;
        count_decision(line, scan_ephi, self.list_denials, &mut self.decisions);
    }

    /// The scan's findings, for a run that should end at `last_seq`; `whole`: whether every
    /// byte of the file was read (else it has no digest).
    pub(super) fn finish(mut self, last_seq: u64, whole: bool) -> Scanned {
        if self.expected != last_seq + 1 && self.problem.is_none() {
            self.problem = Some(format!(
                "the bundle ends at entry {}, the manifest says {}",
                self.expected - 1,
                last_seq
            ));
        }
        let result = match self.problem {
            None => Ok(format!(
                "{} entries {}..={}, every hash chain intact",
                self.run.len(),
                self.first_seq,
                last_seq
            )),
            Some(p) => Err(p),
        };
        Scanned {
            run: self.run,
            result,
            facts: self.facts,
            decisions: self.decisions,
            digest: whole.then(|| (hex::encode(self.sha.finalize()), self.size)),
        }
    }
}

/// Scans the entries file of the bundle in `dir` (a run `first_seq..=last_seq`), reading it once.
pub(super) fn scan_file(
    dir: &std::path::Path,
    (first_seq, last_seq): (u64, u64),
    facts: assess::Facts,
    list_denials: bool,
) -> Scanned {
    use std::io::BufRead as _;
    let mut scan = Scan::new(first_seq, facts, list_denials);
    let Ok(file) = std::fs::File::open(dir.join(ENTRIES)) else {
        return scan.finish(last_seq, false);
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut parsing = true;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return scan.finish(last_seq, true),
            Ok(_) => scan.bytes(&buf),
            Err(_) => {
                scan.problem(format!("{ENTRIES} is not UTF-8 text"));
                return scan.finish(last_seq, false);
            }
        }
        if parsing {
            parsing = scan_line(&mut scan, &buf);
        }
    }
}

/// Parses one line of the file (with its line end) into the scan; false (the problem recorded)
/// when it is not an export line, after which the rest is only hashed.
fn scan_line(scan: &mut Scan, raw: &[u8]) -> bool {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let Ok(text) = std::str::from_utf8(raw) else {
        scan.problem(format!("{ENTRIES} is not UTF-8 text"));
        return false;
    };
    match serde_json::from_str::<Line>(text) {
        Ok(line) => {
            scan.entry(&line);
            true
        }
        Err(e) => {
            scan.problem(format!("a line is not an export line: {e}"));
            false
        }
    }
}

/// `entry` as the log hashes it (serde_json's compact form, keys sorted), written into `buf`;
/// empty if it cannot be written (as `to_string(..).unwrap_or_default()` would give).
fn canonical<'b>(entry: &serde_json::Value, buf: &'b mut String) -> &'b str {
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    if serde_json::to_writer(&mut bytes, entry).is_err() {
        bytes.clear();
    }
    *buf = String::from_utf8(bytes).unwrap_or_default();
    buf
}

/// The first thing wrong with `line`'s place in its source's chain (`heads`: each source's
/// last hash), in the order checked: it follows its predecessor, its hash matches its content.
fn chain_link(heads: &BTreeMap<String, String>, line: &Line, body: &str) -> Option<String> {
    let mut problem = None;
    if let Some(head) = heads.get(&line.source)
        && *head != line.prev_hash
    {
        problem.get_or_insert(format!(
            "entry {} does not follow the previous entry of {}",
            line.seq, line.source
        ));
    }
    let mut h = Sha256::new();
    // Decoded and compared on the stack; the same bytes as `hex::decode(..).unwrap_or_default()`
    // and `hex::encode(..) != line.hash` (lowercase hex only matches).
    let mut prev = [0u8; 32];
    if hex::decode_to_slice(&line.prev_hash, &mut prev).is_ok() {
        h.update(prev);
    } else {
        h.update(hex::decode(&line.prev_hash).unwrap_or_default());
    }
    h.update(body.as_bytes());
    let mut hash = [0u8; 64];
    hex::encode_to_slice(h.finalize(), &mut hash).expect("64 hex digits for 32 bytes");
    if hash[..] != *line.hash.as_bytes() {
        problem.get_or_insert(format!(
            "entry {}: its hash does not match its content: the entry was altered",
            line.seq
        ));
    }
    problem
}

/// Counts the entry's decision, and lists a denial when asked to.
fn count_decision(line: &Line, scan_ephi: bool, list_denials: bool, decisions: &mut Decisions) {
    match line.entry["decision"].as_str() {
        Some("deny") => {
            decisions.denied += 1;
            if list_denials {
                decisions.denials.push(denial(line, scan_ephi));
            }
        }
        Some("allow") => decisions.allowed += 1,
        _ => {}
    }
}

/// A denial as the transcript lists it.
fn denial(line: &Line, scan_ephi: bool) -> Denial {
    let e = &line.entry;
    // Under a profile that keeps ePHI out, the transcript does not repeat any that got in.
    let text = |k: &str| {
        let v = e[k].as_str().unwrap_or("-");
        if scan_ephi {
            meshguard_common::ephi::redact(v).into_owned()
        } else {
            v.to_owned()
        }
    };
    Denial {
        seq: line.seq,
        id: text("id"),
        timestamp: text("timestamp"),
        event: text("event"),
        agent: e["agentName"]
            .as_str()
            .or(e["agentId"].as_str())
            .unwrap_or("-")
            .to_owned(),
        action: text("action"),
        resource: text("resource"),
        policy: e["policyName"]
            .as_str()
            .or(e["policy"].as_str())
            .unwrap_or("-")
            .to_owned(),
        rule: text("rule"),
        reason: text("reason"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(prev_hash: &str, entry: serde_json::Value) -> Line {
        let body = serde_json::to_string(&entry).unwrap();
        let mut h = Sha256::new();
        h.update(hex::decode(prev_hash).unwrap_or_default());
        h.update(body.as_bytes());
        Line {
            seq: 2,
            source: "log".into(),
            prev_hash: prev_hash.into(),
            hash: hex::encode(h.finalize()),
            entry,
        }
    }

    #[test]
    fn the_reused_buffer_holds_what_to_string_gives() {
        let mut buf = String::from("left over from a longer entry before this one");
        for v in [
            json!({"z": 1, "a": [1.5, -0.0, 1e300, null], "é": "\"\\\n\u{1}✓", "m": {"b": true}}),
            json!({}),
            json!("text"),
        ] {
            assert_eq!(canonical(&v, &mut buf), serde_json::to_string(&v).unwrap());
        }
    }

    #[test]
    fn a_chain_link_is_checked_as_hex_text() {
        let heads = BTreeMap::new();
        let prev = "ab".repeat(32);
        for prev_hash in [prev.as_str(), "", "abcd", "not hex"] {
            let ok = line(prev_hash, json!({"id": "e2"}));
            let body = serde_json::to_string(&ok.entry).unwrap();
            assert_eq!(chain_link(&heads, &ok, &body), None, "{prev_hash:?}");
            // The same hash in capitals, or the entry changed: not its hash.
            let mut upper = line(prev_hash, json!({"id": "e2"}));
            upper.hash = upper.hash.to_uppercase();
            assert!(chain_link(&heads, &upper, &body).is_some(), "{prev_hash:?}");
            assert!(chain_link(&heads, &ok, "{\"id\":\"e3\"}").is_some());
        }
        // The prev hash in capitals decodes to the same bytes, as hex::decode reads it.
        let upper_prev = line(&prev.to_uppercase(), json!({"id": "e2"}));
        let body = serde_json::to_string(&upper_prev.entry).unwrap();
        assert_eq!(chain_link(&heads, &upper_prev, &body), None);
    }
}
