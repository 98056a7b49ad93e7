//! Secrets never reach a backend in clear: an account whose API key and proxy password are sealed
//! with [`Cipher`] is written to each backend, then every raw byte the backend holds (the whole
//! redb file; every Redis key under the prefix) is searched for the secrets and their base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use relayd::crypto::Cipher;

use crate::store_conformance::{Fixture, account};

const API_KEY: &str = "sk-test-PLAINTEXT-MARKER-1234";
const PROXY: &str = "socks5://user:PROXY-PASSWORD-MARKER@127.0.0.1:1080";

async fn no_plaintext_at_rest(f: Fixture) {
    let cipher = Cipher::generate();
    let mut rec = account(1, "secretive");
    let key_aad = format!("account:{}:apiKey", rec.id);
    let proxy_aad = format!("account:{}:proxy", rec.id);
    rec.api_key = Some(cipher.seal(&key_aad, API_KEY));
    rec.proxy = Some(cipher.seal(&proxy_aad, PROXY));
    {
        let store = f.open().await;
        store
            .put_accounts(std::slice::from_ref(&rec))
            .await
            .unwrap();
    }

    let raw = f.raw_bytes().await;
    // Guards against a vacuous pass: the record is really in the bytes searched.
    assert!(
        find(&raw, rec.id.as_str().as_bytes()),
        "record not found in raw bytes"
    );
    for needle in [
        API_KEY.to_owned(),
        STANDARD.encode(API_KEY),
        "PLAINTEXT-MARKER".to_owned(),
        "PROXY-PASSWORD-MARKER".to_owned(),
        STANDARD.encode(PROXY),
    ] {
        assert!(!find(&raw, needle.as_bytes()), "{needle:?} found at rest");
    }

    let store = f.open().await;
    let loaded = store.get_account(&rec.id).await.unwrap().unwrap();
    let api_key = loaded.api_key.as_ref().unwrap();
    assert_eq!(cipher.open(&key_aad, api_key).unwrap(), API_KEY);
    assert_eq!(
        cipher
            .open(&proxy_aad, loaded.proxy.as_ref().unwrap())
            .unwrap(),
        PROXY
    );
    // Bound to its record: the key's ciphertext does not open as the proxy.
    assert!(cipher.open(&proxy_aad, api_key).is_err());
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn embedded_holds_no_plaintext_secrets() {
    no_plaintext_at_rest(Fixture::embedded()).await;
}

#[tokio::test]
async fn redis_holds_no_plaintext_secrets() {
    no_plaintext_at_rest(Fixture::redis()).await;
}
