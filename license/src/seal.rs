//! age encryption for files crossing the air gap, interoperable with the stock `age` tool.
//!
//! Output is ASCII-armored (`-----BEGIN AGE ENCRYPTED FILE-----`) so it survives media and
//! tools that mangle binary; input may be armored or binary, as `age` writes either.

use std::io::{BufReader, Read, Write};
use std::iter;
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::{ExposeSecret, SecretString};

use crate::LicenseError;

const BINARY_MAGIC: &[u8] = b"age-encryption.org/v1\n";
const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// A passphrase for a private key at rest: the one type for it in the workspace (licensing,
/// media and witness keys). Held as a `SecretString` (zeroed on drop), never printed.
pub struct Passphrase(SecretString);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// Refuses an empty passphrase: a key "encrypted" with one is a key in clear.
    pub fn new(text: impl Into<String>) -> Result<Self, LicenseError> {
        Self::checked(SecretString::from(text.into()), "a --passphrase-file")
    }

    /// From `file` when given, else from the environment variable `var`; errors say both ways
    /// to give one and never a value.
    pub fn from_file_or_env(
        file: Option<&std::path::Path>,
        var: &str,
    ) -> Result<Self, LicenseError> {
        let text = match file {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                LicenseError::Key(format!(
                    "cannot read the passphrase file {}: {e}",
                    p.display()
                ))
            })?,
            None => std::env::var(var).map_err(|_| {
                LicenseError::Key(format!(
                    "no key passphrase: set {var} or pass --passphrase-file FILE"
                ))
            })?,
        };
        Self::checked(
            SecretString::from(text),
            &format!("{var} or a --passphrase-file"),
        )
    }

    fn checked(text: SecretString, how: &str) -> Result<Self, LicenseError> {
        let trimmed = text.expose_secret().trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            return Err(LicenseError::Key(format!(
                "the key passphrase is empty; give one with {how}"
            )));
        }
        if trimmed.len() == text.expose_secret().len() {
            return Ok(Self(text));
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    /// The passphrase, for the code that derives a key from it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// True when `bytes` is an age file, binary or armored.
pub fn is_age(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes.starts_with(BINARY_MAGIC) || bytes[start..].starts_with(ARMOR_BEGIN)
}

fn armored(plaintext: &[u8], encryptor: age::Encryptor) -> Result<Vec<u8>, LicenseError> {
    let fail = |e: std::io::Error| LicenseError::Age(format!("age encryption failed: {e}"));
    let mut out = Vec::with_capacity(plaintext.len() * 2 + 256);
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(fail)?;
    let mut writer = encryptor.wrap_output(armor).map_err(fail)?;
    writer.write_all(plaintext).map_err(fail)?;
    writer.finish().and_then(|a| a.finish()).map_err(fail)?;
    Ok(out)
}

/// Parses age recipients (`age1…`); the error names the bad one.
pub fn parse_recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, LicenseError> {
    list.iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                LicenseError::Age(format!(
                    "{r:?} is not an age X25519 recipient ({e}); it starts with age1 and comes \
                     from `age-keygen -y` or `meshguard-license site-key`"
                ))
            })
        })
        .collect()
}

/// Encrypts to every recipient (any one of them can decrypt).
pub fn encrypt_to(
    plaintext: &[u8],
    recipients: &[age::x25519::Recipient],
) -> Result<Vec<u8>, LicenseError> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| LicenseError::Age(format!("no usable age recipient: {e}")))?;
    armored(plaintext, encryptor)
}

pub(crate) fn encrypt_with_passphrase(
    plaintext: &[u8],
    passphrase: &Passphrase,
    work_factor: Option<u8>,
) -> Result<Vec<u8>, LicenseError> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.0.clone());
    if let Some(log_n) = work_factor {
        recipient.set_work_factor(log_n);
    }
    let encryptor = age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| LicenseError::Age(format!("age encryption failed: {e}")))?;
    armored(plaintext, encryptor)
}

/// An age reader over armored or binary bytes.
type Armored<'a> = ArmoredReader<BufReader<BufReader<&'a [u8]>>>;

fn decryptor<'a>(bytes: &'a [u8], what: &str) -> Result<age::Decryptor<Armored<'a>>, LicenseError> {
    age::Decryptor::new_buffered(ArmoredReader::new(BufReader::new(bytes)))
        .map_err(|e| LicenseError::Age(format!("{what} is not a readable age file: {e}")))
}

fn read_all(mut reader: impl Read, what: &str) -> Result<Vec<u8>, LicenseError> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| {
        LicenseError::Age(format!(
            "{what}: age decryption failed, the file is damaged or truncated: {e}"
        ))
    })?;
    Ok(out)
}

pub(crate) fn decrypt_with_passphrase(
    bytes: &[u8],
    passphrase: &Passphrase,
    what: &str,
) -> Result<Vec<u8>, LicenseError> {
    let d = decryptor(bytes, what)?;
    if !d.is_scrypt() {
        return Err(LicenseError::Key(format!(
            "{what} is encrypted to an age recipient, not with a passphrase"
        )));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.0.clone());
    identity.set_max_work_factor(30);
    let reader = d
        .decrypt(iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                LicenseError::Key(format!("wrong passphrase for {what}"))
            }
            other => LicenseError::Key(format!("cannot decrypt {what}: {other}")),
        })?;
    read_all(reader, what)
}

/// Age identities (private keys) read from files in the `age-keygen` format.
#[derive(Default)]
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    sources: Vec<String>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Adds every identity in an `age-keygen` style file.
    pub fn add_file(&mut self, path: &std::path::Path) -> Result<(), LicenseError> {
        let bytes = crate::fsutil::read(path)?;
        let what = path.display().to_string();
        let file = age::IdentityFile::from_buffer(BufReader::new(&bytes[..]))
            .map_err(|e| LicenseError::Age(format!("{what} is not an age identity file: {e}")))?;
        let keys = file
            .into_identities()
            .map_err(|e| LicenseError::Age(format!("{what}: unusable age identity: {e}")))?;
        if keys.is_empty() {
            return Err(LicenseError::Age(format!(
                "{what} holds no age identity (expected a line starting AGE-SECRET-KEY-1)"
            )));
        }
        self.keys.extend(keys);
        self.sources.push(what);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Returns `bytes` decrypted when it is an age file, unchanged otherwise.
    pub fn open(&self, bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, LicenseError> {
        if !is_age(&bytes) {
            return Ok(bytes);
        }
        if self.keys.is_empty() {
            return Err(LicenseError::Age(format!(
                "{what} is age-encrypted; pass --identity FILE with the age identity it was \
                 encrypted to"
            )));
        }
        let d = decryptor(&bytes, what)?;
        if d.is_scrypt() {
            return Err(LicenseError::Age(format!(
                "{what} is encrypted with a passphrase; decrypt it with `age -d` first"
            )));
        }
        let reader = d
            .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => LicenseError::Age(format!(
                    "{what} was not encrypted to any of the given identities ({}); ask the \
                     sender to encrypt it to your recipient",
                    self.sources.join(", ")
                )),
                other => LicenseError::Age(format!("cannot decrypt {what}: {other}")),
            })?;
        read_all(reader, what)
    }
}

/// A fresh X25519 identity: (`AGE-SECRET-KEY-1…` file text, `age1…` recipient).
pub fn generate_identity() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    (text, recipient)
}
