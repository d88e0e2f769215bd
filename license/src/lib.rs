//! Offline licensing for MeshGuard.
//!
//! A license is a signed document: the vendor signs its canonical JSON with ed25519 inside a
//! DSSE envelope ([`dsse`]), so the exact signed bytes travel with it and no re-serialization
//! can change what was signed. The flow across an air gap:
//!
//! 1. the vendor `issue`s a license ([`License`]);
//! 2. the site writes an activation `request` that binds the license to its installation id
//!    (made once, at first start) with a fresh nonce ([`ActivationRequest`]);
//! 3. the vendor `activate`s exactly that request ([`Activation`]);
//! 4. the site `install`s license and activation ([`site::SiteDir::install`]);
//! 5. later the vendor `renew`s: same id, later expiry, higher sequence; the site installs the
//!    renewal with no new activation, and an older renewal replayed is refused.
//!
//! Every file that crosses the gap can be encrypted to the other side's age recipient
//! ([`seal`]), and any file the stock `age` tool encrypted is read the same way.
//!
//! Time is always passed in (`now`), so verification is a pure function of the files, the key
//! and the clock reading; [`site::SiteDir`] keeps a high-water mark of the clock so a clock set
//! back is reported.
//!
//! Licensing never switches governance off: [`Status::admin_writes_allowed`] is the only lever
//! a gateway takes from this crate, and enforcement and audit do not consult it.

pub mod canonical;
pub mod document;
pub mod dsse;
mod error;
pub mod fsutil;
pub mod keys;
pub mod seal;
pub mod site;
pub mod slot;
pub mod status;

pub use document::{
    Activation, ActivationRequest, DeploymentMode, Entitlements, License, SignedActivation,
    SignedLicense,
};
pub use error::LicenseError;
pub use keys::{VendorKey, VendorPublicKey};
pub use status::{State, Status};
