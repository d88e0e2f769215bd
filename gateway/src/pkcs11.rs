//! Ed25519 signing keys kept in a PKCS#11 token (a site HSM, SoftHSM2), named by an RFC 7512
//! URI: `pkcs11:token=<label>;object=<label>?module-path=<.so>&pin-source=<file>`. The private
//! key never leaves the token; the gateway asks it for `CKM_EDDSA` signatures (pure Ed25519).
//!
//! Only the URI attributes a site needs are read: `token`, `object`, `id` in the path and
//! `module-path`, `pin-source`, `pin-value` in the query; others are refused so a typo is not
//! silently ignored. A URI may hold a PIN: it is never logged or shown in an error.

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

/// What the URI names (the PIN is kept apart, in [`TokenKey::open`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct Uri {
    token: Option<String>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    module: Option<String>,
    pin_source: Option<String>,
    pin_value: Option<String>,
}

fn decode(v: &str) -> Result<Vec<u8>, String> {
    Ok(percent_encoding::percent_decode_str(v).collect())
}

fn text(attr: &str, v: &str) -> Result<String, String> {
    String::from_utf8(decode(v)?).map_err(|_| format!("the PKCS#11 URI's {attr} is not UTF-8"))
}

fn parse(uri: &str) -> Result<Uri, String> {
    let rest = uri
        .strip_prefix("pkcs11:")
        .ok_or("a PKCS#11 key is named by a URI starting with `pkcs11:` (RFC 7512)")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut u = Uri::default();
    for part in path.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!(
                "the PKCS#11 URI's path attribute {k:?} has no value",
                k = part
            )
        })?;
        match k {
            "token" => u.token = Some(text(k, v)?),
            "object" => u.object = Some(text(k, v)?),
            "id" => u.id = Some(decode(v)?),
            // What the key is, not which one: checked by the search anyway.
            "type" if v == "private" => {}
            other => {
                return Err(format!(
                    "the PKCS#11 URI's path attribute {other:?} is not supported; use token=, object= and id="
                ));
            }
        }
    }
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("the PKCS#11 URI's query attribute {part:?} has no value"))?;
        match k {
            "module-path" => u.module = Some(text(k, v)?),
            "pin-source" => u.pin_source = Some(text(k, v)?),
            "pin-value" => u.pin_value = Some(text(k, v)?),
            other => {
                return Err(format!(
                    "the PKCS#11 URI's query attribute {other:?} is not supported; use module-path=, pin-source= or pin-value="
                ));
            }
        }
    }
    if u.object.is_none() && u.id.is_none() {
        return Err("the PKCS#11 URI names no key: give object=<label> or id=<hex as %xx>".into());
    }
    Ok(u)
}

/// An Ed25519 private key in a token, with its public key read from the token and checked to
/// be its pair.
pub(crate) struct TokenKey {
    session: Mutex<Session>,
    key: ObjectHandle,
    public: [u8; 32],
    /// Where the key is, for messages: token and object labels, never the PIN.
    name: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The 32-byte Ed25519 point of `CKA_EC_POINT`: raw, or DER-wrapped in an OCTET STRING (as
/// SoftHSM2 and most HSMs store it).
fn ed25519_point(raw: &[u8]) -> Option<[u8; 32]> {
    match raw {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        _ if raw.len() == 32 => raw.try_into().ok(),
        _ => None,
    }
}

impl TokenKey {
    /// Opens the key the URI names: loads the module, finds the token, logs in with the PIN and
    /// finds exactly one Ed25519 private key and its public key.
    pub(crate) fn open(uri: &str) -> Result<Self, String> {
        let (session, u, name) = login(uri)?;
        Self::find(session, &u, name)
    }
}

/// Loads the module the URI names, finds its one token and logs in with the PIN: the session a
/// token key works in, what the URI names, and a name for messages (never the PIN).
fn login(uri: &str) -> Result<(Session, Uri, String), String> {
    let u = parse(uri)?;
    let module = u
            .module
            .as_deref()
            .ok_or("the PKCS#11 URI has no module-path= (the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)")?;
    let pin = match (&u.pin_source, &u.pin_value) {
        (Some(source), _) => {
            let file = source.strip_prefix("file:").unwrap_or(source);
            let file = file.strip_prefix("//").unwrap_or(file);
            std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the token PIN from pin-source {file}: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_owned()
        }
        (None, Some(v)) => v.clone(),
        (None, None) => {
            return Err(
                "the PKCS#11 URI has no pin-source= (a file holding the token's user PIN)".into(),
            );
        }
    };
    let name = format!(
        "token {:?} object {:?}",
        u.token.as_deref().unwrap_or("(any)"),
        u.object.as_deref().unwrap_or("(by id)")
    );
    let ctx =
        Pkcs11::new(module).map_err(|e| format!("cannot load the PKCS#11 module {module}: {e}"))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => {
            return Err(format!(
                "the PKCS#11 module {module} did not initialize: {e}"
            ));
        }
    }
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| format!("cannot list the tokens of {module}: {e}"))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| format!("cannot read a token's label: {e}"))?;
        if u.token
            .as_deref()
            .is_none_or(|t| info.label().trim_end() == t)
        {
            found.push(slot);
        }
    }
    let slot = match found.as_slice() {
        [one] => *one,
        [] => return Err(format!("no PKCS#11 token matches {name} in {module}")),
        _ => {
            return Err(format!(
                "{} tokens match {name} in {module}; name one with token=<label>",
                found.len()
            ));
        }
    };
    let session = ctx
        .open_ro_session(slot)
        .map_err(|e| format!("cannot open a session with {name}: {e}"))?;
    match session.login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => {
            return Err(format!(
                "cannot log in to {name} (check the PIN in pin-source): {e}"
            ));
        }
    }
    Ok((session, u, name))
}

/// The one object of `template` (plus the URI's label and id) in the session.
fn one_object(
    session: &Session,
    u: &Uri,
    name: &str,
    mut template: Vec<Attribute>,
    what: &str,
) -> Result<ObjectHandle, String> {
    if let Some(label) = &u.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &u.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| format!("cannot search {name}: {e}"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("{name} holds no {what} by that name")),
        many => Err(format!(
            "{name}: {} {what}s match; add id= to the URI",
            many.len()
        )),
    }
}

impl TokenKey {
    fn find(session: Session, u: &Uri, name: String) -> Result<Self, String> {
        let find = |class: ObjectClass| -> Result<Vec<ObjectHandle>, String> {
            let mut template = vec![
                Attribute::Class(class),
                Attribute::KeyType(KeyType::EC_EDWARDS),
            ];
            if let Some(label) = &u.object {
                template.push(Attribute::Label(label.as_bytes().to_vec()));
            }
            if let Some(id) = &u.id {
                template.push(Attribute::Id(id.clone()));
            }
            session
                .find_objects(&template)
                .map_err(|e| format!("cannot search {name}: {e}"))
        };
        let key = one_object(
            &session,
            u,
            &name,
            vec![
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
            ],
            "Ed25519 private key",
        )?;
        let public = find(ObjectClass::PUBLIC_KEY)?
            .into_iter()
            .find_map(|h| {
                session
                    .get_attributes(h, &[AttributeType::EcPoint])
                    .ok()?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(p) => ed25519_point(&p),
                        _ => None,
                    })
            })
            .ok_or_else(|| format!("{name} holds no Ed25519 public key beside the private key"))?;
        let this = Self {
            session: Mutex::new(session),
            key,
            public,
            name,
        };
        // The public key found must be the private key's pair, or every signature would fail
        // verification later, far from here.
        let probe = b"meshguard pkcs11 key check";
        let sig = this.sign(probe)?;
        VerifyingKey::from_bytes(&public)
            .and_then(|k| k.verify(probe, &Signature::from_bytes(&sig)))
            .map_err(|_| {
                format!(
                    "{}: the public key beside the private key is not its pair",
                    this.name
                )
            })?;
        Ok(this)
    }

    pub(crate) fn public(&self) -> [u8; 32] {
        self.public
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A pure Ed25519 signature of `msg` by the token.
    pub(crate) fn sign(&self, msg: &[u8]) -> Result<[u8; 64], String> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let sig = session
            .sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                msg,
            )
            .map_err(|e| format!("{} refused to sign: {e}", self.name))?;
        sig.try_into()
            .map_err(|_| format!("{} returned a signature that is not 64 bytes", self.name))
    }
}

/// An AES-256 key in a token that seals alert-channel secrets with `CKM_AES_GCM`
/// (`SECRETS_KEY_URI`): the key never leaves the token; each secret is sent to it to be sealed
/// or opened.
pub(crate) struct TokenAes {
    session: Mutex<Session>,
    key: ObjectHandle,
    name: String,
}

impl std::fmt::Debug for TokenAes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAes")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// GCM's IV and tag sizes.
const GCM_IV: usize = 12;
const GCM_TAG_BITS: u64 = 128;

impl TokenAes {
    /// Opens the AES key the URI names and checks that it seals and opens.
    pub(crate) fn open(uri: &str) -> Result<Self, String> {
        let (session, u, name) = login(uri)?;
        let key = one_object(
            &session,
            &u,
            &name,
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
            ],
            "AES key",
        )?;
        let this = Self {
            session: Mutex::new(session),
            key,
            name,
        };
        let probe = this.seal(b"meshguard pkcs11 key check")?;
        if this.open_sealed(&probe)? != b"meshguard pkcs11 key check" {
            return Err(format!(
                "{}: a sealed probe did not open to itself",
                this.name
            ));
        }
        Ok(this)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn gcm(&self, iv: &mut [u8; GCM_IV], input: &[u8], seal: bool) -> Result<Vec<u8>, String> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let params = cryptoki::mechanism::aead::GcmParams::new(iv, &[], GCM_TAG_BITS.into())
            .map_err(|e| format!("{}: GCM parameters: {e}", self.name))?;
        let mechanism = Mechanism::AesGcm(params);
        if seal {
            session
                .encrypt(&mechanism, self.key, input)
                .map_err(|e| format!("{} refused to seal: {e}", self.name))
        } else {
            session.decrypt(&mechanism, self.key, input).map_err(|_| {
                format!(
                    "a sealed secret does not open with {}: altered, or sealed by another key",
                    self.name
                )
            })
        }
    }

    /// `iv ‖ ciphertext ‖ tag` of `clear`, with a fresh random IV.
    pub(crate) fn seal(&self, clear: &[u8]) -> Result<Vec<u8>, String> {
        let mut iv: [u8; GCM_IV] = rand::random();
        let ct = self.gcm(&mut iv, clear, true)?;
        Ok([iv.as_slice(), &ct].concat())
    }

    /// The clear bytes of what [`TokenAes::seal`] made.
    pub(crate) fn open_sealed(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < GCM_IV + 16 {
            return Err("a sealed secret is truncated".into());
        }
        let mut iv: [u8; GCM_IV] = sealed[..GCM_IV].try_into().expect("12 bytes");
        self.gcm(&mut iv, &sealed[GCM_IV..], false)
    }

    /// A key check value: what the key makes of 16 zero bytes under an all-zero IV, which no
    /// sealed secret uses (theirs are random). Names the key in sealed values without reading it.
    pub(crate) fn check_value(&self) -> Result<Vec<u8>, String> {
        let mut iv = [0u8; GCM_IV];
        self.gcm(&mut iv, &[0u8; 16], true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_token_object_module_and_pin_and_refuse_what_they_do_not_support() {
        let u = parse("pkcs11:token=mesh%20guard;object=audit-log;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin").unwrap();
        assert_eq!(u.token.as_deref(), Some("mesh guard"));
        assert_eq!(u.object.as_deref(), Some("audit-log"));
        assert_eq!(u.module.as_deref(), Some("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(u.pin_source.as_deref(), Some("file:/run/pin"));
        assert_eq!(parse("pkcs11:id=%01%02").unwrap().id, Some(vec![1, 2]));
        assert!(parse("file:/x").unwrap_err().contains("pkcs11:"));
        assert!(
            parse("pkcs11:token=t")
                .unwrap_err()
                .contains("names no key")
        );
        assert!(parse("pkcs11:objekt=x").unwrap_err().contains("\"objekt\""));
        assert!(
            parse("pkcs11:object=x?pin=1")
                .unwrap_err()
                .contains("\"pin\"")
        );
        assert_eq!(
            ed25519_point(&[[0x04, 0x20].as_slice(), &[7; 32]].concat()),
            Some([7; 32])
        );
        assert_eq!(ed25519_point(&[7; 32]), Some([7; 32]));
        assert_eq!(ed25519_point(&[7; 31]), None);
    }
}
