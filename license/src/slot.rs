//! The vendor-key slot of a release build.
//!
//! A gateway built for customer media carries the vendor's public key, so a site cannot turn
//! licensing off or swap the vendor by changing its environment. The key is not compiled in:
//! the gateway reserves a fixed slot ([`EMPTY`]) and the release pipeline stamps the key into
//! the built binary ([`stamp`]) before the image is made, so SBOM, provenance and signatures
//! are computed on the stamped bytes, and a keyed build costs no second compile.
//!
//! ```text
//! offset  len  what
//!      0   32  magic "MESHGUARD/vendor-key-slot/v1" + 4 NULs
//!     32    1  0 = development build (no key), 1 = keyed
//!     33   32  the vendor's raw ed25519 public key (zeros when not keyed)
//!     65    8  the first 8 bytes of SHA-256 over the key (a stamp damaged in transit shows)
//!     73    7  reserved, zero
//! ```
//!
//! Finding the slot is a byte search for the magic, which must occur exactly once. So that no
//! other copy of the magic lands in a binary (a tool that stamps or inspects, or the gateway's
//! own reader), code outside the slot's initializer never holds the magic as a constant: it is
//! rebuilt at run time from its reversal ([`magic`]).

use sha2::{Digest, Sha256};

use crate::{LicenseError, VendorPublicKey};

pub const SLOT_LEN: usize = 80;
const MAGIC_LEN: usize = 32;
const STATE: usize = 32;
const KEY: usize = 33;
const CHECK: usize = 65;

/// The magic, reversed (see the module's notes).
const MAGIC_REVERSED: [u8; MAGIC_LEN] = reverse(*b"MESHGUARD/vendor-key-slot/v1\0\0\0\0");

/// What a gateway binary reserves: the magic and "not keyed".
pub const EMPTY: [u8; SLOT_LEN] = {
    let magic = reverse(MAGIC_REVERSED);
    let mut slot = [0u8; SLOT_LEN];
    let mut i = 0;
    while i < MAGIC_LEN {
        slot[i] = magic[i];
        i += 1;
    }
    slot
};

const fn reverse(mut bytes: [u8; MAGIC_LEN]) -> [u8; MAGIC_LEN] {
    let mut i = 0;
    while i < MAGIC_LEN / 2 {
        let t = bytes[i];
        bytes[i] = bytes[MAGIC_LEN - 1 - i];
        bytes[MAGIC_LEN - 1 - i] = t;
        i += 1;
    }
    bytes
}

/// The magic, rebuilt at run time so the optimizer cannot fold it into a second literal.
fn magic() -> [u8; MAGIC_LEN] {
    let mut m = std::hint::black_box(MAGIC_REVERSED);
    m.reverse();
    m
}

/// What a build is, from its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keying {
    /// No vendor key: licensing is off unless `LICENSE_PUBKEY` is set.
    Development,
    /// Built for release: licensing is always on, with this vendor key.
    Release(VendorPublicKey),
}

impl Keying {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Release(_) => "release",
        }
    }

    pub fn key(&self) -> Option<&VendorPublicKey> {
        match self {
            Self::Development => None,
            Self::Release(k) => Some(k),
        }
    }
}

/// Reads a slot (the gateway's own, or one found in a binary).
pub fn parse(slot: &[u8; SLOT_LEN]) -> Result<Keying, LicenseError> {
    if slot[..MAGIC_LEN] != magic() {
        return Err(damaged("its magic is not the slot's"));
    }
    match slot[STATE] {
        0 if slot[KEY..].iter().all(|b| *b == 0) => Ok(Keying::Development),
        0 => Err(damaged("it says 'not keyed' but holds key bytes")),
        1 => {
            let key: [u8; 32] = slot[KEY..CHECK].try_into().expect("32 bytes");
            if Sha256::digest(key)[..8] != slot[CHECK..CHECK + 8] {
                return Err(damaged("its key does not match its checksum"));
            }
            VendorPublicKey::from_bytes(&key, "the build's vendor key").map(Keying::Release)
        }
        other => Err(damaged(&format!("unknown state byte {other}"))),
    }
}

/// What the binary `bytes` is: a development or a keyed (release) build. `what` names the
/// binary in errors.
pub fn inspect(bytes: &[u8], what: &str) -> Result<Keying, LicenseError> {
    let at = find(bytes, what)?;
    let slot: &[u8; SLOT_LEN] = bytes[at..at + SLOT_LEN].try_into().expect("in bounds");
    parse(slot).map_err(|e| LicenseError::Invalid(format!("{what}: {e}")))
}

/// Stamps `key` into the binary `bytes` (a development build, or one keyed with the same key:
/// stamping again changes nothing). Refuses a binary keyed with another vendor's key.
pub fn stamp(bytes: &mut [u8], key: &VendorPublicKey, what: &str) -> Result<(), LicenseError> {
    if let Keying::Release(existing) = inspect(bytes, what)?
        && existing != *key
    {
        return Err(LicenseError::Key(format!(
            "{what} is already keyed with vendor key {}, not {}; build it again from source to \
             key it for another vendor",
            existing.key_id(),
            key.key_id()
        )));
    }
    let at = find(bytes, what)?;
    let raw = key.to_bytes();
    let slot = &mut bytes[at..at + SLOT_LEN];
    slot[STATE] = 1;
    slot[KEY..CHECK].copy_from_slice(&raw);
    slot[CHECK..CHECK + 8].copy_from_slice(&Sha256::digest(raw)[..8]);
    Ok(())
}

/// Whether `bytes` hold the slot's magic at all: a gateway built before keyed builds (or a file
/// that is no gateway) does not, and is unkeyed.
pub fn present(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, &magic()).is_some()
}

/// The offset of the one slot in `bytes`.
fn find(bytes: &[u8], what: &str) -> Result<usize, LicenseError> {
    let magic = magic();
    let mut hits = memchr::memmem::find_iter(bytes, &magic);
    match (hits.next(), hits.next()) {
        (Some(at), None) if at + SLOT_LEN <= bytes.len() => Ok(at),
        (None, _) | (Some(_), None) => Err(LicenseError::Invalid(format!(
            "{what} has no vendor-key slot: it is not a MeshGuard gateway binary (or one older \
             than keyed builds); give the meshguard-gateway binary of this release"
        ))),
        (Some(_), Some(_)) => Err(LicenseError::Invalid(format!(
            "{what} holds the vendor-key slot's magic more than once, so which one is the slot \
             is not clear; it was not built from this source"
        ))),
    }
}

fn damaged(detail: &str) -> LicenseError {
    LicenseError::Invalid(format!(
        "the vendor-key slot is damaged ({detail}); rebuild the binary, or stamp it again from \
         the development build"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VendorKey;

    /// A stand-in binary: code bytes, the reserved slot, more code bytes.
    fn binary() -> Vec<u8> {
        let mut b = vec![0x90u8; 1000];
        b.extend_from_slice(&EMPTY);
        b.extend_from_slice(&[0xccu8; 500]);
        b
    }

    #[test]
    fn a_stamped_binary_names_its_key_and_an_unstamped_one_is_development() {
        let key = VendorKey::generate().public();
        let mut b = binary();
        assert_eq!(inspect(&b, "gw").unwrap(), Keying::Development);
        stamp(&mut b, &key, "gw").unwrap();
        assert_eq!(inspect(&b, "gw").unwrap(), Keying::Release(key.clone()));
        assert_eq!(b.len(), binary().len(), "stamping never moves a byte");
        let before = b.clone();
        stamp(&mut b, &key, "gw").unwrap();
        assert_eq!(
            b, before,
            "stamping again with the same key changes nothing"
        );
    }

    #[test]
    fn another_vendor_key_a_missing_slot_two_slots_and_damage_are_refused() {
        let (a, b_key) = (
            VendorKey::generate().public(),
            VendorKey::generate().public(),
        );
        let mut b = binary();
        stamp(&mut b, &a, "gw").unwrap();
        let err = stamp(&mut b, &b_key, "gw").unwrap_err().to_string();
        assert!(
            err.contains(&a.key_id()) && err.contains("already keyed"),
            "{err}"
        );

        let err = inspect(&[0u8; 4096], "x").unwrap_err().to_string();
        assert!(err.contains("no vendor-key slot"), "{err}");
        assert!(!present(&[0u8; 4096]) && present(&binary()));

        let mut twice = binary();
        twice.extend_from_slice(&EMPTY);
        let err = inspect(&twice, "x").unwrap_err().to_string();
        assert!(err.contains("more than once"), "{err}");

        for (offset, what) in [(KEY + 3, "checksum"), (STATE, "state byte")] {
            let mut d = b.clone();
            d[1000 + offset] ^= 0x5a;
            let err = inspect(&d, "gw").unwrap_err().to_string();
            assert!(
                err.contains("damaged") && err.contains(what),
                "{offset}: {err}"
            );
        }
    }
}
