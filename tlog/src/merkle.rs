//! RFC 6962 Merkle tree hashing: leaf and node hashes, the root of a growing log kept as its
//! frontier of perfect subtrees, and inclusion and consistency proofs with their verification
//! (RFC 9162 §2.1.3.2 and §2.1.4.2).
//!
//! Written by hand: the crates that exist either are not RFC 6962 (`rs_merkle`), reject an old
//! size of 0 (`ct-merkle`), or bring a tile client we do not need; the algorithms are short and
//! are checked here against a brute-force tree for every size below 40.

use sha2::{Digest, Sha256};
use std::convert::Infallible;

pub type Hash = [u8; 32];

/// SHA-256("") — the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The roots of the perfect subtrees that make up a log of `size` leaves, largest first:
/// enough to append and to compute the root in O(log n).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// `(height, hash)`, heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        self.push_and_see(leaf, |_, _| {});
    }

    /// [`Self::push`], showing `seen` every complete subtree the leaf closes, as (height, hash):
    /// each ends at this leaf.
    pub fn push_and_see(&mut self, leaf: Hash, mut seen: impl FnMut(u32, &Hash)) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.nodes.last() {
            if height != node.0 {
                break;
            }
            self.nodes.pop();
            node = (height + 1, node_hash(&left, &node.1));
            seen(node.0, &node.1);
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The frontier's hashes, largest subtree first (their heights follow from the size).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.nodes.iter().flat_map(|(_, h)| *h).collect()
    }

    /// The frontier of a tree of `size` leaves from [`Self::to_bytes`]; `None` if the bytes do
    /// not fit that size.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
        let heights: Vec<u32> = (0..64).rev().filter(|h| size >> h & 1 == 1).collect();
        if bytes.len() != heights.len() * 32 {
            return None;
        }
        let nodes = heights
            .into_iter()
            .zip(bytes.chunks_exact(32))
            .map(|(height, h)| (height, h.try_into().expect("32-byte chunks")))
            .collect();
        Some(Self { size, nodes })
    }

    /// MTH(D[size]): the perfect subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// MTH over leaf hashes, by the RFC's recursive definition.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly below `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// PATH(m, D[n]): the audit path of leaf `index`, from every leaf (the tests' reference).
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    let mut mth =
        |lo: u64, hi: u64| Ok::<_, Infallible>(root_of(&leaves[lo as usize..hi as usize]));
    match inclusion_proof_with(index as u64, leaves.len() as u64, &mut mth) {
        Ok(p) => p,
        Err(never) => match never {},
    }
}

/// PROOF(m, D[n]): that the tree of the first `m` leaves is a prefix of the tree of `leaves`
/// (the tests' reference).
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let mut mth =
        |lo: u64, hi: u64| Ok::<_, Infallible>(root_of(&leaves[lo as usize..hi as usize]));
    match consistency_proof_with(m as u64, leaves.len() as u64, &mut mth) {
        Ok(p) => p,
        Err(never) => match never {},
    }
}

/// [`inclusion_proof`] for a tree of `size` leaves that are not in memory: `mth(lo, hi)` gives
/// MTH(D[lo:hi]) for the ranges the proof needs (each a complete, aligned subtree or a right
/// edge of one), so a store can answer from saved subtree hashes.
pub fn inclusion_proof_with<E>(
    index: u64,
    size: u64,
    mth: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    fn path<E>(
        index: u64,
        lo: u64,
        hi: u64,
        mth: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
    ) -> Result<Vec<Hash>, E> {
        if hi - lo <= 1 {
            return Ok(Vec::new());
        }
        let k = split((hi - lo) as usize) as u64;
        if index < lo + k {
            let mut p = path(index, lo, lo + k, mth)?;
            p.push(mth(lo + k, hi)?);
            Ok(p)
        } else {
            let mut p = path(index, lo + k, hi, mth)?;
            p.push(mth(lo, lo + k)?);
            Ok(p)
        }
    }
    path(index, 0, size, mth)
}

/// [`consistency_proof`] for a tree of `size` leaves that are not in memory (see
/// [`inclusion_proof_with`]).
pub fn consistency_proof_with<E>(
    m: u64,
    size: u64,
    mth: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    fn sub<E>(
        m: u64,
        lo: u64,
        hi: u64,
        whole: bool,
        mth: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
    ) -> Result<Vec<Hash>, E> {
        let n = hi - lo;
        if m == n {
            return Ok(if whole {
                Vec::new()
            } else {
                vec![mth(lo, hi)?]
            });
        }
        let k = split(n as usize) as u64;
        if m <= k {
            let mut p = sub(m, lo, lo + k, whole, mth)?;
            p.push(mth(lo + k, hi)?);
            Ok(p)
        } else {
            let mut p = sub(m - k, lo + k, hi, false, mth)?;
            p.push(mth(lo, lo + k)?);
            Ok(p)
        }
    }
    if m == 0 || m > size {
        return Ok(Vec::new());
    }
    sub(m, 0, size, true, mth)
}

/// MTH(D[lo:hi]) from `complete(start, height)`, the hash of the complete subtree of
/// `2^height` leaves starting at `start`, following the RFC's split: the left part of every
/// split is complete and aligned, the right part splits again.
pub fn range_root<E>(
    lo: u64,
    hi: u64,
    complete: &mut impl FnMut(u64, u32) -> Result<Hash, E>,
) -> Result<Hash, E> {
    let n = hi - lo;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return complete(lo, n.trailing_zeros());
    }
    let k = split(n as usize) as u64;
    let left = complete(lo, k.trailing_zeros())?;
    let right = range_root(lo + k, hi, complete)?;
    Ok(node_hash(&left, &right))
}

/// A run of consecutive leaves `start..start + len` of a larger tree, kept as it streams in
/// as the hashes of its maximal aligned complete subtrees (each `2^h` leaves starting at a
/// multiple of `2^h`; at most two per height, so about `2 log2 len` of them): what
/// [`run_root_of`] needs of the run, in memory that does not grow with it. Every aligned
/// complete subtree is a node of the RFC 6962 tree of any size that holds it, so the tree's
/// nodes inside the run are these or are made of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHashes {
    start: u64,
    len: u64,
    /// `(first leaf, height, hash)`, in leaf order, adjacent, none mergeable with the next.
    nodes: Vec<(u64, u32, Hash)>,
}

impl RunHashes {
    /// An empty run whose first leaf will be leaf `start` of the tree.
    pub fn new(start: u64) -> Self {
        Self {
            start,
            len: 0,
            nodes: Vec::new(),
        }
    }

    /// The run of `leaves` starting at leaf `start`.
    pub fn of(start: u64, leaves: &[Hash]) -> Self {
        let mut run = Self::new(start);
        leaves.iter().for_each(|l| run.push(*l));
        run
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// How many leaves were pushed.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the run's next leaf, merging the subtrees it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (self.start.wrapping_add(self.len), 0u32, leaf);
        while let Some(&(lo, height, left)) = self.nodes.last() {
            // Two subtrees of one height make their parent only if the left one starts on a
            // multiple of the parent's width (lo == 0 has 64 trailing zeros).
            if height != node.1 || lo.trailing_zeros() <= height {
                break;
            }
            self.nodes.pop();
            node = (lo, height + 1, node_hash(&left, &node.2));
        }
        self.nodes.push(node);
        self.len += 1;
    }

    /// MTH(D[lo:hi]) if it is one of the run's maximal subtrees.
    fn subtree(&self, lo: u64, hi: u64) -> Option<Hash> {
        self.nodes
            .iter()
            .find(|(start, height, _)| *start == lo && hi - lo == 1 << height)
            .map(|(_, _, h)| *h)
    }
}

/// The root of the tree of `size` leaves from a run of its leaf hashes, `leaves`, and the
/// inclusion proofs of the run's first and last leaf, each `(index, hashes leaf to root)`:
/// every subtree outside the run is a sibling on the path of its first or its last leaf
/// (RFC 9162 §2.1.3), so the two proofs and the run determine the root. A run that rebuilds a
/// signed root proves each of its entries as its own inclusion proof would.
pub fn run_root(
    size: u64,
    first: (u64, &[Hash]),
    last: (u64, &[Hash]),
    leaves: &[Hash],
) -> Result<Hash, String> {
    run_root_of(size, first, last, &RunHashes::of(first.0, leaves))
}

/// [`run_root`] from the run as it streamed in (its first leaf must be the first proof's).
pub fn run_root_of(
    size: u64,
    first: (u64, &[Hash]),
    last: (u64, &[Hash]),
    run: &RunHashes,
) -> Result<Hash, String> {
    let (a, b) = (first.0, last.0);
    if a > b || b >= size || run.start != a || run.len != b - a + 1 {
        return Err(format!(
            "the run {a}..={b} of {} leaves does not fit a tree of {size}",
            run.len
        ));
    }
    let mut known: std::collections::BTreeMap<(u64, u64), Hash> = Default::default();
    for (index, proof) in [first, last] {
        let spans = path_spans(index, 0, size);
        if spans.len() != proof.len() {
            return Err(format!(
                "the proof of leaf {index} has {} hashes; a tree of {size} needs {}",
                proof.len(),
                spans.len()
            ));
        }
        known.extend(spans.into_iter().zip(proof.iter().copied()));
    }
    // MTH of leaves lo..hi: one of the run's subtrees where it is one, a sibling a proof gave
    // where it is outside the run, else its two halves.
    fn mth(
        lo: u64,
        hi: u64,
        (a, b): (u64, u64),
        run: &RunHashes,
        known: &std::collections::BTreeMap<(u64, u64), Hash>,
    ) -> Result<Hash, String> {
        if hi <= a || lo > b {
            return known
                .get(&(lo, hi))
                .copied()
                .ok_or_else(|| format!("the proofs lack the subtree of leaves {lo}..{hi}"));
        }
        if lo >= a
            && hi <= b + 1
            && let Some(h) = run.subtree(lo, hi)
        {
            return Ok(h);
        }
        if hi - lo == 1 {
            // Not reached: every leaf of the run is in one of its subtrees, which are nodes.
            return Err(format!("the run lacks the subtree of leaf {lo}"));
        }
        let k = split((hi - lo) as usize) as u64;
        Ok(node_hash(
            &mth(lo, lo + k, (a, b), run, known)?,
            &mth(lo + k, hi, (a, b), run, known)?,
        ))
    }
    mth(0, size, (a, b), run, &known)
}

/// The spans `(lo, hi)` of the siblings on the path of leaf `m` in the tree `lo..hi`, leaf to
/// root: the order of an RFC 9162 inclusion proof.
fn path_spans(m: u64, lo: u64, hi: u64) -> Vec<(u64, u64)> {
    if hi - lo <= 1 {
        return Vec::new();
    }
    let k = split((hi - lo) as usize) as u64;
    if m < lo + k {
        let mut v = path_spans(m, lo, lo + k);
        v.push((lo + k, hi));
        v
    } else {
        let mut v = path_spans(m, lo + k, hi);
        v.push((lo, lo + k));
        v
    }
}

pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

pub fn verify_consistency(
    m: u64,
    n: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if m == n {
        return proof.is_empty() && old_root == new_root;
    }
    if m == 0 {
        return proof.is_empty();
    }
    if m > n || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(*old_root);
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
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old_root && sr == *new_root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn empty_root_is_the_sha256_of_nothing() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(empty_root());
        assert_eq!(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn proofs_from_subtree_hashes_equal_proofs_from_all_leaves() {
        let leaves: Vec<Hash> = (0..40u8).map(|i| leaf_hash(&[i])).collect();
        let mut complete = |start: u64, height: u32| {
            Ok::<_, Infallible>(root_of(
                &leaves[start as usize..(start + (1 << height)) as usize],
            ))
        };
        for hi in 0..=40u64 {
            for lo in 0..=hi {
                let got = range_root(lo, hi, &mut complete).unwrap();
                assert_eq!(
                    got,
                    root_of(&leaves[lo as usize..hi as usize]),
                    "[{lo}, {hi})"
                );
            }
        }
        for size in 1..=40usize {
            let mut mth = |lo: u64, hi: u64| range_root(lo, hi, &mut complete);
            for i in 0..size {
                let p = inclusion_proof_with(i as u64, size as u64, &mut mth).unwrap();
                assert_eq!(p, inclusion_proof(i, &leaves[..size]), "leaf {i} of {size}");
            }
            for m in 0..=size {
                let p = consistency_proof_with(m as u64, size as u64, &mut mth).unwrap();
                assert_eq!(p, consistency_proof(m, &leaves[..size]), "{m} -> {size}");
            }
        }
    }

    #[test]
    fn a_frontier_saved_and_loaded_goes_on_as_if_it_never_stopped() {
        let leaves: Vec<Hash> = (0..40u8).map(|i| leaf_hash(&[i])).collect();
        for size in 0..40usize {
            let mut f = Frontier::default();
            leaves[..size].iter().for_each(|l| f.push(*l));
            let mut loaded = Frontier::from_bytes(size as u64, &f.to_bytes()).expect("fits");
            assert_eq!(loaded.root(), f.root(), "size {size}");
            leaves[size..].iter().for_each(|l| loaded.push(*l));
            assert_eq!(loaded.root(), root_of(&leaves), "size {size} then 40");
            let mut short = f.to_bytes();
            if !short.is_empty() {
                short.pop();
                assert!(Frontier::from_bytes(size as u64, &short).is_none());
            }
        }
    }

    #[test]
    fn a_streamed_run_keeps_its_maximal_aligned_subtrees_and_rebuilds_every_root() {
        let all = leaves(40);
        for size in 1..=40u64 {
            let root = root_of(&all[..size as usize]);
            for a in 0..size {
                let mut run = RunHashes::new(a);
                for b in a..size {
                    run.push(all[b as usize]);
                    // The subtrees tile a..=b, each aligned, complete and hashed as the RFC's
                    // definition, and no two of them make an aligned subtree together.
                    let mut next = a;
                    for (i, &(lo, height, h)) in run.nodes.iter().enumerate() {
                        let hi = lo + (1 << height);
                        assert_eq!(lo, next, "{a}..={b}: tiles");
                        assert_eq!(lo % (1 << height), 0, "{a}..={b}: aligned");
                        assert_eq!(h, root_of(&all[lo as usize..hi as usize]), "{a}..={b}");
                        if let Some(&(_, right, _)) = run.nodes.get(i + 1) {
                            assert!(right != height || lo % (2 << height) != 0, "{a}..={b}");
                        }
                        next = hi;
                    }
                    assert_eq!((next, run.len()), (b + 1, b - a + 1), "{a}..={b}");
                    let (pa, pb) = (
                        inclusion_proof(a as usize, &all[..size as usize]),
                        inclusion_proof(b as usize, &all[..size as usize]),
                    );
                    let got = run_root_of(size, (a, &pa), (b, &pb), &run);
                    assert_eq!(got, Ok(root), "size {size}, run {a}..={b}");
                    let slice = run_root(size, (a, &pa), (b, &pb), &all[a as usize..=b as usize]);
                    assert_eq!(slice, Ok(root), "size {size}, run {a}..={b} from a slice");
                }
            }
        }
    }

    #[test]
    fn a_streamed_run_that_is_not_the_proofs_run_is_refused_or_misses_the_root() {
        let all = leaves(16);
        let root = root_of(&all);
        let (p3, p9) = (inclusion_proof(3, &all), inclusion_proof(9, &all));
        // Starting elsewhere, or one leaf short or long: refused.
        for (start, n) in [(2u64, 7usize), (4, 6), (3, 6), (3, 8)] {
            let run = RunHashes::of(start, &all[start as usize..start as usize + n]);
            assert!(
                run_root_of(16, (3, &p3), (9, &p9), &run).is_err(),
                "{start} {n}"
            );
        }
        // Right place and length, one leaf altered: another root.
        let mut bad = all[3..=9].to_vec();
        bad[6][0] ^= 1;
        let got = run_root_of(16, (3, &p3), (9, &p9), &RunHashes::of(3, &bad)).unwrap();
        assert_ne!(got, root);
        assert!(RunHashes::new(5).is_empty());
    }

    #[test]
    fn frontier_root_matches_the_recursive_definition_for_every_size_below_40() {
        let all = leaves(40);
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for n in 1..40 {
            f.push(all[n - 1]);
            assert_eq!(f.root(), root_of(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_reject_tampering_for_every_size_below_40() {
        let all = leaves(40);
        for n in 1..40 {
            let root = root_of(&all[..n]);
            for i in 0..n {
                let proof = inclusion_proof(i, &all[..n]);
                assert!(
                    verify_inclusion(i as u64, n as u64, &all[i], &proof, &root),
                    "size {n} index {i}"
                );
                let wrong = leaf_hash(b"forged");
                assert!(!verify_inclusion(i as u64, n as u64, &wrong, &proof, &root));
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_reject_rewrites_for_every_size_below_40() {
        let all = leaves(40);
        let mut rewritten = all.clone();
        rewritten[0] = leaf_hash(b"rewritten history");
        for n in 1..40 {
            let new_root = root_of(&all[..n]);
            for m in 1..=n {
                let proof = consistency_proof(m, &all[..n]);
                let old_root = root_of(&all[..m]);
                assert!(
                    verify_consistency(m as u64, n as u64, &proof, &old_root, &new_root),
                    "{m} -> {n}"
                );
                let forged_old = root_of(&rewritten[..m]);
                assert!(
                    !verify_consistency(m as u64, n as u64, &proof, &forged_old, &new_root),
                    "{m} -> {n} forged"
                );
            }
        }
    }
}
