//! RFC 6962 Merkle tree hashing: leaf and node hashes, the root of a growing log kept as its
//! frontier of perfect subtrees, and inclusion and consistency proofs with their verification
//! (RFC 9162 §2.1.3.2 and §2.1.4.2).
//!
//! Written by hand: the crates that exist either are not RFC 6962 (`rs_merkle`), reject an old
//! size of 0 (`ct-merkle`), or bring a tile client we do not need; the algorithms are short and
//! are checked here against a brute-force tree for every size below 40.

use sha2::{Digest, Sha256};

pub(crate) type Hash = [u8; 32];

/// SHA-256("") — the root of the empty tree.
pub(crate) fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

pub(crate) fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The roots of the perfect subtrees that make up a log of `size` leaves, largest first:
/// enough to append and to compute the root in O(log n).
#[derive(Debug, Clone, Default)]
pub(crate) struct Frontier {
    size: u64,
    /// `(height, hash)`, heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.nodes.last() {
            if height != node.0 {
                break;
            }
            self.nodes.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The frontier's hashes, largest subtree first (their heights follow from the size).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.nodes.iter().flat_map(|(_, h)| *h).collect()
    }

    /// The frontier of a tree of `size` leaves from [`Self::to_bytes`]; `None` if the bytes do
    /// not fit that size.
    pub(crate) fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
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
    pub(crate) fn root(&self) -> Hash {
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
pub(crate) fn root_of(leaves: &[Hash]) -> Hash {
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

/// PATH(m, D[n]): the audit path of leaf `index`.
pub(crate) fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut p = inclusion_proof(index, &leaves[..k]);
        p.push(root_of(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(index - k, &leaves[k..]);
        p.push(root_of(&leaves[..k]));
        p
    }
}

/// PROOF(m, D[n]): that the tree of the first `m` leaves is a prefix of the tree of `leaves`.
pub(crate) fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn sub(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole {
                Vec::new()
            } else {
                vec![root_of(leaves)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = sub(m, &leaves[..k], whole);
            p.push(root_of(&leaves[k..]));
            p
        } else {
            let mut p = sub(m - k, &leaves[k..], false);
            p.push(root_of(&leaves[..k]));
            p
        }
    }
    if m == 0 || m > leaves.len() {
        return Vec::new();
    }
    sub(m, leaves, true)
}

pub(crate) fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> bool {
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

pub(crate) fn verify_consistency(
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
