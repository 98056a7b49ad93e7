//! Encryption of secrets at rest (placeholder: being implemented).

use serde::{Deserialize, Serialize};

/// A sealed secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Base64 nonce.
    pub nonce: String,
    /// Base64 ciphertext with tag.
    pub ct: String,
}
