//! Canonical JSON for signed documents (`meshguard_common::canonical`, floats refused): the
//! one byte form a license, request or activation is signed and hashed in.

use serde::Serialize;

use crate::LicenseError;

/// The canonical bytes of any serializable value; a float is refused.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, LicenseError> {
    meshguard_common::canonical::to_vec(value, meshguard_common::canonical::Floats::Refuse)
        .map_err(LicenseError::Invalid)
}
