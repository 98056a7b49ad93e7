//! Credentials: the admin token that guards `/admin/v1`, and relay keys that guard the client
//! routes. Both are compared in constant time over SHA-256 digests, so neither the content nor the
//! length of a stored secret leaks through timing.
//!
//! Relay-key secrets look like `rk_<16 hex>_<32 alphanumerics>`: the hex part is the public key id
//! (one hash-map lookup finds the record), and only a hash of the whole secret is stored.

use std::path::Path;

use axum::http::HeaderMap;
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use shared::key::KeyId;
use subtle::ConstantTimeEq;

/// The admin bearer token, held as its digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// Where the admin token came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `RELAYD_ADMIN_TOKEN`.
    Environment,
    /// An existing token file.
    File,
    /// Generated now and written to the token file.
    Generated,
}

impl AdminToken {
    /// Wraps a token value.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Uses `env_value` if given, else the token in `path`, else generates one into `path` (0600).
    pub fn load_or_create(
        env_value: Option<&str>,
        path: &Path,
    ) -> std::io::Result<(Self, TokenOrigin)> {
        if let Some(token) = env_value.map(str::trim).filter(|t| !t.is_empty()) {
            return Ok((Self::new(token), TokenOrigin::Environment));
        }
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                return Ok((Self::new(text.trim()), TokenOrigin::File));
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("admin token file {} is empty", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let token = format!("adm_{}", random_alphanumeric(40));
        if crate::crypto::create_private_file(path, token.as_bytes())? {
            return Ok((Self::new(&token), TokenOrigin::Generated));
        }
        // Another relayd starting at the same time wrote its token first: use that one.
        let text = std::fs::read_to_string(path)?;
        Ok((Self::new(text.trim()), TokenOrigin::File))
    }

    /// Whether `presented` is the token.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }

    /// A key for `purpose` derived from the token: the same in every relayd holding this token
    /// (so they accept each other's signatures) and a different one once the token changes
    /// (so rotating the token invalidates everything signed with the old one).
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"relayd derived key\0");
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        hasher.update(self.digest);
        hasher.finalize().into()
    }
}

/// HMAC-SHA256 of `message` under `key` (RFC 2104). Written out over `sha2` rather than adding
/// a crate for twenty lines; checked against the RFC 4231 test vectors below.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `n` random ASCII letters and digits from the OS-seeded thread RNG.
pub fn random_alphanumeric(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n_bytes: usize) -> String {
    // Ids are a dozen bytes: no heap buffer for those.
    let mut small = [0u8; 32];
    let mut large = Vec::new();
    let bytes: &mut [u8] = if n_bytes <= small.len() {
        &mut small[..n_bytes]
    } else {
        large.resize(n_bytes, 0);
        &mut large
    };
    rand::thread_rng().fill(&mut *bytes);
    lower_hex(bytes)
}

/// Lower-case hex. `hex::encode` collects one `char` at a time through an iterator, which cost
/// more than the SHA-256 it encodes; this runs on every request (ids, key check).
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A freshly generated relay key: its id, the secret to show once, and the hash to store.
#[derive(Debug)]
pub struct NewRelayKey {
    /// Public id.
    pub id: KeyId,
    /// `rk_…`, shown once.
    pub secret: String,
    /// Hex SHA-256 of `secret`, stored.
    pub hash: String,
}

/// Generates a relay key.
pub fn generate_relay_key() -> NewRelayKey {
    let public = random_hex(8);
    let secret = format!("rk_{public}_{}", random_alphanumeric(32));
    NewRelayKey {
        id: KeyId(format!("{}{public}", KeyId::PREFIX)),
        hash: hash_secret(&secret),
        secret,
    }
}

/// Hex SHA-256 of a relay-key secret.
pub fn hash_secret(secret: &str) -> String {
    lower_hex(&Sha256::digest(secret.as_bytes()))
}

/// The key id inside a presented secret, if it has the relay-key shape.
pub fn key_id_of(secret: &str) -> Option<KeyId> {
    let rest = secret.strip_prefix("rk_")?;
    let (public, tail) = rest.split_once('_')?;
    (public.len() == 16 && public.bytes().all(|b| b.is_ascii_hexdigit()) && !tail.is_empty())
        .then(|| KeyId(format!("{}{public}", KeyId::PREFIX)))
}

/// Constant-time comparison of a presented secret with a stored hex hash.
pub fn secret_matches(presented: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(presented);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// The credential a client presented: `Authorization: Bearer`, `x-api-key` or `api-key`.
/// `None` when there is none.
///
/// Only a Bearer token in `Authorization` is ours: another scheme (`Basic` added by a proxy or
/// an HTTP library, say), an empty or malformed value does not hide a relay key sent in
/// `x-api-key` or `api-key`. A Bearer token, when there is one, is the credential checked.
pub fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty());
    bearer.or_else(|| {
        ["x-api-key", "api-key"].iter().find_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|t| !t.is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(lower_hex(&[]), "");
    }

    #[test]
    fn generated_keys_verify_and_carry_their_id() {
        let k = generate_relay_key();
        assert!(secret_matches(&k.secret, &k.hash));
        assert!(!secret_matches(&format!("{}x", k.secret), &k.hash));
        assert_eq!(key_id_of(&k.secret), Some(k.id));
        assert_eq!(key_id_of("rk_nothex_abc"), None);
        assert_eq!(key_id_of("sk-ant-whatever"), None);
    }

    #[test]
    fn credential_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_credential(&h), None);
        h.insert("x-api-key", "abc".parse().unwrap());
        assert_eq!(presented_credential(&h), Some("abc"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(presented_credential(&h), Some("xyz"));
        // Another scheme is not ours and does not hide the `x-api-key`.
        h.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(presented_credential(&h), Some("abc"));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(presented_credential(&h), Some("abc"));
        h.remove("x-api-key");
        assert_eq!(presented_credential(&h), None);
        let mut h = HeaderMap::new();
        h.insert("api-key", "azure".parse().unwrap());
        assert_eq!(presented_credential(&h), Some("azure"));
    }

    #[test]
    fn admin_token_is_generated_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let (t, origin) = AdminToken::load_or_create(None, &path).unwrap();
        assert_eq!(origin, TokenOrigin::Generated);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(t.verify(text.trim()));
        assert!(!t.verify("wrong"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, origin) = AdminToken::load_or_create(None, &path).unwrap();
        assert_eq!(origin, TokenOrigin::File);
        assert!(t2.verify(text.trim()));
        let (t3, origin) = AdminToken::load_or_create(Some("from-env"), &path).unwrap();
        assert_eq!(origin, TokenOrigin::Environment);
        assert!(t3.verify("from-env"));
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2: a short key.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            lower_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            lower_hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn derived_keys_follow_the_token_and_the_purpose() {
        let a = AdminToken::new("one");
        assert_eq!(a.derive_key("ui"), AdminToken::new("one").derive_key("ui"));
        assert_ne!(a.derive_key("ui"), AdminToken::new("two").derive_key("ui"));
        assert_ne!(a.derive_key("ui"), a.derive_key("other"));
    }
}
