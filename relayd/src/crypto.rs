//! Encryption of secrets at rest: upstream API keys and proxy URLs are sealed with
//! XChaCha20-Poly1305 before they reach any store, so neither the redb file nor Redis ever holds
//! them in clear.
//!
//! Every sealed value carries the id of the record it belongs to as associated data (for example
//! `account:acc_0123456789abcdef:apiKey`), so a ciphertext copied into another record fails to
//! open instead of silently becoming that record's secret. XChaCha's 24-byte nonce is large enough
//! to draw at random for every seal without any risk of reuse.
//!
//! The key comes from `RELAYD_ENCRYPTION_KEY`, an explicit key file, or `<data dir>/encryption.key`,
//! which is generated on first start ([`load_or_create_key`]).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Length of an encryption key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce in bytes.
const NONCE_LEN: usize = 24;
/// Name of the generated key file inside the data directory.
pub const DEFAULT_KEY_FILE_NAME: &str = "encryption.key";
/// Environment variable holding the key (base64 or hex), for reference in messages.
pub const KEY_ENV_VAR: &str = "RELAYD_ENCRYPTION_KEY";

/// A sealed secret: what the stores hold instead of the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Base64 nonce.
    pub nonce: String,
    /// Base64 ciphertext with tag.
    pub ct: String,
}

/// Everything encryption and key loading can fail with. Messages never contain key material or
/// plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext does not authenticate: wrong key, wrong record, or tampered data.
    #[error(
        "cannot decrypt {aad}: wrong encryption key, or the value was damaged or moved from another record"
    )]
    Decrypt {
        /// The associated data (record id) of the value.
        aad: String,
    },
    /// A sealed value is not well-formed (bad base64, wrong nonce length, not UTF-8 inside).
    #[error("sealed value {aad} is malformed: {detail}")]
    Malformed {
        /// The associated data (record id) of the value.
        aad: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The configured key cannot be used.
    #[error("encryption key from {origin} is malformed: {problem}")]
    BadKey {
        /// Where the key came from (`RELAYD_ENCRYPTION_KEY` or a file path).
        origin: String,
        /// What is wrong, without the key itself.
        problem: String,
    },
    /// Reading or writing a key file failed.
    #[error("cannot {action} encryption key file {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `create`…).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Where the encryption key came from; the caller logs it at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The `RELAYD_ENCRYPTION_KEY` environment variable.
    Env,
    /// An existing key file (explicit or the data directory default).
    File(PathBuf),
    /// A key generated just now and written to this file. Log loudly: losing the file loses every
    /// stored upstream secret.
    Generated(PathBuf),
}

/// The authenticated cipher for secrets at rest.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
    fingerprint: String,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the fingerprint: the key bytes must never reach a log.
        f.debug_struct("Cipher")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Cipher {
    /// A cipher over raw key bytes.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        // Domain-separated so the fingerprint is not a plain hash of the key that could be
        // matched against hashes of candidate keys computed for other purposes.
        let mut hasher = Sha256::new();
        hasher.update(b"relayd encryption key fingerprint v1\0");
        hasher.update(key);
        let digest = hasher.finalize();
        Self {
            aead: XChaCha20Poly1305::new(Key::from_slice(key)),
            fingerprint: hex::encode(&digest[..4]),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::new(&random_key())
    }

    /// Eight hex digits identifying the key, safe to log, to tell two keys apart.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Encrypts `plaintext` bound to `aad` (the record id) with a fresh random nonce.
    pub fn seal(&self, aad: &str, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            // The AEAD only fails for messages beyond 256 GiB; secrets are a few hundred bytes.
            .expect("XChaCha20-Poly1305 encryption of a short secret cannot fail");
        Sealed {
            nonce: STANDARD.encode(nonce),
            ct: STANDARD.encode(ct),
        }
    }

    /// Decrypts a value sealed for `aad`.
    pub fn open(&self, aad: &str, sealed: &Sealed) -> Result<String, CryptoError> {
        let malformed = |detail: String| CryptoError::Malformed {
            aad: aad.to_owned(),
            detail,
        };
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|e| malformed(format!("nonce is not base64: {e}")))?;
        if nonce.len() != NONCE_LEN {
            return Err(malformed(format!(
                "nonce has {} bytes, expected {NONCE_LEN}",
                nonce.len()
            )));
        }
        let ct = STANDARD
            .decode(&sealed.ct)
            .map_err(|e| malformed(format!("ciphertext is not base64: {e}")))?;
        let plain = self
            .aead
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt {
                aad: aad.to_owned(),
            })?;
        String::from_utf8(plain).map_err(|_| malformed("plaintext is not UTF-8".to_owned()))
    }
}

fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    key
}

/// Parses a key given as 64 hex digits or as base64 (standard or URL-safe alphabet) of 32 bytes.
/// The error names the problem, never the value.
pub fn parse_key(text: &str) -> Result<[u8; KEY_LEN], String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| format!("invalid hex: {e}"))?
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .map_err(|_| {
                format!(
                    "expected {KEY_LEN} bytes as base64 or {} hex digits",
                    2 * KEY_LEN
                )
            })?
    };
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "it decodes to {} bytes; expected exactly {KEY_LEN}",
            bytes.len()
        )
    })
}

/// Loads the encryption key, creating one on first start.
///
/// Precedence: `env_key` (the value of `RELAYD_ENCRYPTION_KEY`), then `key_file`, then
/// `<data_dir>/encryption.key`. Only the data-directory default is ever created: an explicit key
/// file that is missing is an error, because silently generating a new key there would make every
/// stored secret unreadable.
pub fn load_or_create_key(
    data_dir: &Path,
    env_key: Option<&str>,
    key_file: Option<&Path>,
) -> Result<(Cipher, KeyOrigin), CryptoError> {
    if let Some(value) = env_key {
        let key = parse_key(value).map_err(|problem| CryptoError::BadKey {
            origin: KEY_ENV_VAR.to_owned(),
            problem,
        })?;
        return Ok((Cipher::new(&key), KeyOrigin::Env));
    }
    if let Some(path) = key_file {
        let key = read_key_file(path)?;
        return Ok((Cipher::new(&key), KeyOrigin::File(path.to_owned())));
    }
    let path = data_dir.join(DEFAULT_KEY_FILE_NAME);
    match read_key_file(&path) {
        Ok(key) => Ok((Cipher::new(&key), KeyOrigin::File(path))),
        Err(CryptoError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            create_key_file(&path)
        }
        Err(e) => Err(e),
    }
}

fn read_key_file(path: &Path) -> Result<[u8; KEY_LEN], CryptoError> {
    let io_err = |source| CryptoError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let text = fs::read_to_string(path).map_err(io_err)?;
    warn_if_exposed(path);
    parse_key(&text).map_err(|problem| CryptoError::BadKey {
        origin: path.display().to_string(),
        problem,
    })
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "encryption key file is readable by group or others; run chmod 600 on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

/// Writes a fresh key to `path` without ever overwriting an existing file (see
/// [`create_private_file`]): two relayd processes starting at once agree on one key (the loser
/// reads the winner's), and a crash never leaves a half-written key file under the final name.
fn create_key_file(path: &Path) -> Result<(Cipher, KeyOrigin), CryptoError> {
    let key = random_key();
    let created = create_private_file(path, STANDARD.encode(key).as_bytes()).map_err(|source| {
        CryptoError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }
    })?;
    if !created {
        // Another process created the key between our read and our link: use theirs.
        let key = read_key_file(path)?;
        return Ok((Cipher::new(&key), KeyOrigin::File(path.to_owned())));
    }
    Ok((Cipher::new(&key), KeyOrigin::Generated(path.to_owned())))
}

/// Creates `path` holding `contents` and a newline, readable only by its owner (0600), for the
/// secrets relayd generates on first start (the encryption key, the admin token). Never
/// overwrites: returns `false`, leaving the file alone, when `path` already exists. Atomic: the
/// contents go to a private temporary file in the same directory, fsynced, then hard-linked into
/// place (`link` fails if the target exists), so no reader ever sees a half-written file, and the
/// directory is fsynced so the new name survives a power loss. Creates missing parent directories.
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", OsRng.next_u64()));
    let linked = write_new_private(&tmp, contents).and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    // The temporary name has served its purpose whatever happened; a leftover is harmless but
    // untidy, so failure to remove it is ignored.
    let _ = fs::remove_file(&tmp);
    if linked? {
        sync_dir(dir)?;
        return Ok(true);
    }
    Ok(false)
}

/// Writes `contents` and a newline to a new 0600 file and fsyncs it.
fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Makes the new directory entry durable, so the file survives a power loss right after startup.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &str = "account:acc_0123456789abcdef:apiKey";

    #[test]
    fn roundtrip() {
        let c = Cipher::generate();
        let s = c.seal(AAD, "sk-secret");
        assert_eq!(c.open(AAD, &s).unwrap(), "sk-secret");
        assert!(!s.ct.contains("sk-secret"));
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let c = Cipher::generate();
        let a = c.seal(AAD, "same");
        let b = c.seal(AAD, "same");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ct, b.ct);
        assert_eq!(STANDARD.decode(&a.nonce).unwrap().len(), NONCE_LEN);
    }

    #[test]
    fn wrong_aad_fails() {
        let c = Cipher::generate();
        let s = c.seal(AAD, "sk-secret");
        let err = c
            .open("account:acc_ffffffffffffffff:apiKey", &s)
            .unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt { .. }), "{err}");
        assert!(!err.to_string().contains("sk-secret"));
    }

    #[test]
    fn wrong_key_fails() {
        let s = Cipher::generate().seal(AAD, "sk-secret");
        let err = Cipher::generate().open(AAD, &s).unwrap_err();
        assert!(err.to_string().contains("wrong encryption key"), "{err}");
    }

    #[test]
    fn malformed_sealed_value_is_reported() {
        let c = Cipher::generate();
        let mut s = c.seal(AAD, "x");
        s.nonce = "AAAA".into();
        let err = c.open(AAD, &s).unwrap_err();
        assert!(err.to_string().contains("nonce has 3 bytes"), "{err}");
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let key = [7u8; KEY_LEN];
        let c = Cipher::new(&key);
        let debug = format!("{c:?}");
        assert!(debug.contains(c.fingerprint()), "{debug}");
        assert!(!debug.contains(&hex::encode(key)));
        assert!(!debug.contains(&STANDARD.encode(key)));
        assert_eq!(c.fingerprint().len(), 8);
        assert_ne!(c.fingerprint(), Cipher::generate().fingerprint());
    }

    #[test]
    fn env_key_wins_in_hex_and_base64() {
        let dir = tempfile::tempdir().unwrap();
        let key = [9u8; KEY_LEN];
        let (a, origin) = load_or_create_key(dir.path(), Some(&hex::encode(key)), None).unwrap();
        assert_eq!(origin, KeyOrigin::Env);
        let (b, _) = load_or_create_key(dir.path(), Some(&STANDARD.encode(key)), None).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(!dir.path().join(DEFAULT_KEY_FILE_NAME).exists());
    }

    #[test]
    fn malformed_env_key_names_the_variable_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_or_create_key(dir.path(), Some("not-a-key-SECRETISH"), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(KEY_ENV_VAR), "{msg}");
        assert!(!msg.contains("SECRETISH"), "{msg}");
        let short = STANDARD.encode([1u8; 16]);
        let msg = load_or_create_key(dir.path(), Some(&short), None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("16 bytes"), "{msg}");
    }

    #[test]
    fn generated_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (a, origin) = load_or_create_key(&data, None, None).unwrap();
        let path = data.join(DEFAULT_KEY_FILE_NAME);
        assert_eq!(origin, KeyOrigin::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (b, origin) = load_or_create_key(&data, None, None).unwrap();
        assert_eq!(origin, KeyOrigin::File(path));
        assert_eq!(a.fingerprint(), b.fingerprint());
        let s = a.seal(AAD, "v");
        assert_eq!(b.open(AAD, &s).unwrap(), "v");
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
    }

    #[test]
    fn explicit_key_file_is_used_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.key");
        let err = load_or_create_key(dir.path(), None, Some(&file)).unwrap_err();
        assert!(err.to_string().contains("my.key"), "{err}");
        assert!(!file.exists());
        fs::write(&file, format!("{}\n", hex::encode([3u8; KEY_LEN]))).unwrap();
        let (_, origin) = load_or_create_key(dir.path(), None, Some(&file)).unwrap();
        assert_eq!(origin, KeyOrigin::File(file));
    }

    #[test]
    fn malformed_key_file_names_the_file_and_problem_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE_NAME);
        fs::write(&path, "garbage CONTENT here").unwrap();
        let msg = load_or_create_key(dir.path(), None, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("expected 32 bytes"), "{msg}");
        assert!(!msg.contains("CONTENT"), "{msg}");
        // A malformed file is never replaced by a new key.
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage CONTENT here");
    }
}
