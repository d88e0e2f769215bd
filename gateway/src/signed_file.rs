//! Files the site hands the gateway signed with minisign (the egress allowlist, the change
//! approver list): read together with `FILE.minisig` and accepted only if the signature is by
//! the key given, so an edited or unsigned file is refused, not trusted.

use std::path::Path;
use std::time::SystemTime;

/// A verified file: its bytes, their SHA-256 (hex) and its modification time.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sha256: String,
    pub(crate) modified: Option<SystemTime>,
}

/// Reads `path` and `path.minisig` and checks the signature against the minisign public key in
/// `pubkey`; `what` names the file in errors ("the egress allowlist").
pub(crate) fn read(path: &Path, pubkey: &Path, what: &str) -> Result<Verified, String> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".minisig");
    let sig_text = std::fs::read_to_string(&sig_path).map_err(|_| {
        format!(
            "{} has no signature ({} is missing); {what} unsigned is refused",
            path.display(),
            Path::new(&sig_path).display()
        )
    })?;
    let pk_text = std::fs::read_to_string(pubkey)
        .map_err(|e| format!("cannot read the key of {what}, {}: {e}", pubkey.display()))?;
    let pk = minisign_verify::PublicKey::decode(pk_text.trim())
        .or_else(|_| minisign_verify::PublicKey::from_base64(pk_text.trim()))
        .map_err(|_| format!("{} is not a minisign public key", pubkey.display()))?;
    let sig = minisign_verify::Signature::decode(&sig_text)
        .map_err(|e| format!("the signature of {what} is malformed: {e}"))?;
    pk.verify(&bytes, &sig, false).map_err(|_| {
        format!(
            "{} is not signed by the key in {}; refused",
            path.display(),
            pubkey.display()
        )
    })?;
    Ok(Verified {
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        bytes,
        modified,
    })
}
