//! KICC's cryptography, each in one function: msgAuthValue (HMAC-SHA256, hex), the KICC Pay
//! request signature (HMAC-SHA256, Base64) and the KICC Pay tokenKey (AES-256-CBC, Base64).
//! Spec 02 "Message Authentication Value", spec 06 "Message authentication", "KICC Pay".

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// msgAuthValue: HMAC-SHA256 keyed with the merchant secret (UTF-8) over the fields joined with
/// `|`, as lowercase hex (spec 06: output encoding from practice). `|` is forbidden inside
/// KICC request fields, so the joined input is unambiguous.
///
/// - approval response (spec 02): `pgCno|amount|transactionDate` (the merchant verifies)
/// - revise (cancel) request (spec 06): `pgCno|shopTransactionId` (the merchant signs)
pub fn msg_auth_value(secret_key: &str, fields: &[&str]) -> String {
    hex::encode(msg_auth_mac(secret_key, fields).finalize().into_bytes())
}

/// Checks a received msgAuthValue in constant time (spec 06: "Compare with a constant-time
/// comparison"). Hex case is ignored; anything that is not 64 hex digits fails.
pub fn verify_msg_auth_value(secret_key: &str, fields: &[&str], received: &str) -> bool {
    hex::decode(received.trim())
        .is_ok_and(|tag| msg_auth_mac(secret_key, fields).verify_slice(&tag).is_ok())
}

fn msg_auth_mac(secret_key: &str, fields: &[&str]) -> HmacSha256 {
    let mut mac = hmac(secret_key.as_bytes());
    mac.update(fields.join("|").as_bytes());
    mac
}

/// `X-KICC-Authorization` of a KICC Pay call (spec 06): Base64(HMAC-SHA256(secret,
/// ChannelId + RequestURI + Timestamp + Nonce + rawBody)), concatenated without separators;
/// RequestURI is the path only; the body byte-identical to what is sent.
pub fn kiccpay_signature(
    secret_key: &str,
    channel_id: &str,
    request_uri: &str,
    timestamp_ms: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    BASE64.encode(
        kiccpay_mac(
            secret_key,
            channel_id,
            request_uri,
            timestamp_ms,
            nonce,
            body,
        )
        .finalize()
        .into_bytes(),
    )
}

/// Checks an `X-KICC-Authorization` value in constant time.
pub fn verify_kiccpay_signature(
    secret_key: &str,
    channel_id: &str,
    request_uri: &str,
    timestamp_ms: &str,
    nonce: &str,
    body: &[u8],
    received: &str,
) -> bool {
    BASE64.decode(received.trim()).is_ok_and(|tag| {
        kiccpay_mac(
            secret_key,
            channel_id,
            request_uri,
            timestamp_ms,
            nonce,
            body,
        )
        .verify_slice(&tag)
        .is_ok()
    })
}

fn kiccpay_mac(
    secret_key: &str,
    channel_id: &str,
    request_uri: &str,
    timestamp_ms: &str,
    nonce: &str,
    body: &[u8],
) -> HmacSha256 {
    let mut mac = hmac(secret_key.as_bytes());
    for part in [
        channel_id.as_bytes(),
        request_uri.as_bytes(),
        timestamp_ms.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        mac.update(part);
    }
    mac
}

/// KICC Pay `tokenKey` (spec 03: "Must encrypt the authorizationId … using AES256").
/// [assume] (spec 06): AES-256-CBC, PKCS#7 padding, the configured 32-byte key and 16-byte IV,
/// Base64 output. KICC does not publish the mode; this function is the one place that decides.
pub fn encrypt_token_key(key: &[u8; 32], iv: &[u8; 16], authorization_id: &str) -> String {
    let cipher = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
    BASE64.encode(cipher.encrypt_padded_vec::<Pkcs7>(authorization_id.as_bytes()))
}

/// The inverse of [`encrypt_token_key`] (the sandbox uses it to recover the authorizationId).
pub fn decrypt_token_key(key: &[u8; 32], iv: &[u8; 16], token_key: &str) -> Option<String> {
    let bytes = BASE64.decode(token_key.trim()).ok()?;
    let cipher = cbc::Decryptor::<Aes256>::new(key.into(), iv.into());
    let plain = cipher.decrypt_padded_vec::<Pkcs7>(&bytes).ok()?;
    String::from_utf8(plain).ok()
}

/// Seals a value the app must keep but nobody should read from the database: the authorizationId
/// a KICC Pay net-cancel needs again (spec 03/06). AES-256-CBC with a random IV, then
/// HMAC-SHA256 over version, IV and ciphertext (encrypt-then-MAC), both keys derived from
/// `secret` (a configured secret, never stored in the database). `v1:` + Base64(IV ‖ ct ‖ tag).
pub fn seal(secret: &str, plaintext: &str) -> String {
    let (enc, mac_key) = sealing_keys(secret);
    let iv: [u8; 16] = rand::random();
    let cipher = cbc::Encryptor::<Aes256>::new((&enc).into(), (&iv).into());
    let mut out = iv.to_vec();
    out.extend(cipher.encrypt_padded_vec::<Pkcs7>(plaintext.as_bytes()));
    let mut mac = hmac(&mac_key);
    mac.update(b"v1:");
    mac.update(&out);
    out.extend(mac.finalize().into_bytes());
    format!("v1:{}", BASE64.encode(out))
}

/// Opens what [`seal`] made with the same secret; `None` if it was altered or sealed under
/// another secret.
pub fn unseal(secret: &str, sealed: &str) -> Option<String> {
    let bytes = BASE64.decode(sealed.strip_prefix("v1:")?).ok()?;
    if bytes.len() < 16 + 16 + 32 {
        return None;
    }
    let (body, tag) = bytes.split_at(bytes.len() - 32);
    let (enc, mac_key) = sealing_keys(secret);
    let mut mac = hmac(&mac_key);
    mac.update(b"v1:");
    mac.update(body);
    mac.verify_slice(tag).ok()?;
    let (iv, ct) = body.split_at(16);
    let iv: [u8; 16] = iv.try_into().ok()?;
    let cipher = cbc::Decryptor::<Aes256>::new((&enc).into(), (&iv).into());
    String::from_utf8(cipher.decrypt_padded_vec::<Pkcs7>(ct).ok()?).ok()
}

/// Two independent keys for [`seal`]: HMAC-SHA256(secret, label).
fn sealing_keys(secret: &str) -> ([u8; 32], [u8; 32]) {
    let derive = |label: &[u8]| -> [u8; 32] {
        let mut mac = hmac(secret.as_bytes());
        mac.update(label);
        mac.finalize().into_bytes().into()
    };
    (
        derive(b"kicc-checkout at rest v1: encryption"),
        derive(b"kicc-checkout at rest v1: authentication"),
    )
}

#[cfg(test)]
mod tests {
    //! Known answers computed outside Rust, recorded with the command that made them.
    use super::*;

    const KEY: [u8; 32] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f,
    ];
    const IV: [u8; 16] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae,
        0xaf,
    ];

    #[test]
    fn msg_auth_value_matches_python_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"easypay-test-secret",
        //   b"PG20210326000001|51004|20210326090200", hashlib.sha256).hexdigest())'
        let expected = "cca936625e8b60818bad6a35bd70f889ceae69ce06d9f18a26250fdc8cac0e00";
        let fields = ["PG20210326000001", "51004", "20210326090200"];
        assert_eq!(msg_auth_value("easypay-test-secret", &fields), expected);
        assert!(verify_msg_auth_value(
            "easypay-test-secret",
            &fields,
            expected
        ));
        assert!(verify_msg_auth_value(
            "easypay-test-secret",
            &fields,
            &expected.to_uppercase()
        ));
        // python3 -c '… b"PG20210326000001|a3f1c2d4-0000-4000-8000-000000000001" …'
        assert_eq!(
            msg_auth_value(
                "easypay-test-secret",
                &["PG20210326000001", "a3f1c2d4-0000-4000-8000-000000000001"]
            ),
            "2d8637e27b164bf04becdbfde0d322b0cb2cc8f059c4de78c39259e596b0387b"
        );
    }

    #[test]
    fn msg_auth_value_rejects_any_change() {
        let fields = ["PG20210326000001", "51004", "20210326090200"];
        let good = msg_auth_value("easypay-test-secret", &fields);
        assert!(!verify_msg_auth_value("other-secret", &fields, &good));
        assert!(!verify_msg_auth_value(
            "easypay-test-secret",
            &["PG20210326000001", "51005", "20210326090200"],
            &good
        ));
        assert!(!verify_msg_auth_value(
            "easypay-test-secret",
            &fields,
            &good[..62]
        ));
        assert!(!verify_msg_auth_value(
            "easypay-test-secret",
            &fields,
            "not hex"
        ));
        assert!(!verify_msg_auth_value("easypay-test-secret", &fields, ""));
    }

    #[test]
    fn kiccpay_signature_matches_python_hmac() {
        // python3: base64.b64encode(hmac.new(b"kiccpay-test-secret", b"CH-0001" +
        //   b"/smpy/kiccpay/reqAprv" + b"1703473200000" + b"5f0c8a8e-3b7e-4e7a-9d3a-2c1f0e9b7a61" +
        //   body, hashlib.sha256).digest())
        let body = br#"{"tid":"T123456789","mercTrxNo":"ORD_20231225_0001","trxAmt":10000}"#;
        let args = (
            "kiccpay-test-secret",
            "CH-0001",
            "/smpy/kiccpay/reqAprv",
            "1703473200000",
            "5f0c8a8e-3b7e-4e7a-9d3a-2c1f0e9b7a61",
        );
        let expected = "kwnGz6LjblpUkZahwcOx8uNlMrdJ0oHCO6vvVMBCa/c=";
        assert_eq!(
            kiccpay_signature(args.0, args.1, args.2, args.3, args.4, body),
            expected
        );
        assert!(verify_kiccpay_signature(
            args.0, args.1, args.2, args.3, args.4, body, expected
        ));
        // One byte of the body changed, or another path: refused.
        let tampered = br#"{"tid":"T123456789","mercTrxNo":"ORD_20231225_0001","trxAmt":10001}"#;
        assert!(!verify_kiccpay_signature(
            args.0, args.1, args.2, args.3, args.4, tampered, expected
        ));
        assert!(!verify_kiccpay_signature(
            args.0,
            args.1,
            "/smpy/kiccpay/reqCancel",
            args.3,
            args.4,
            body,
            expected
        ));
        assert!(!verify_kiccpay_signature(
            args.0, args.1, args.2, args.3, args.4, body, "%%%"
        ));
    }

    #[test]
    fn token_key_matches_openssl() {
        // printf 'AUTH_20231225_0123456789' | openssl enc -aes-256-cbc
        //   -K 000102…1f -iv a0a1…af -base64 -A
        let expected = "I8vBu+J1t8a9ssixojTyHlAkO/ChAETHty2Mx/ZSEb0=";
        assert_eq!(
            encrypt_token_key(&KEY, &IV, "AUTH_20231225_0123456789"),
            expected
        );
        assert_eq!(
            decrypt_token_key(&KEY, &IV, expected).as_deref(),
            Some("AUTH_20231225_0123456789")
        );
        // printf '' | openssl enc … : one block of padding.
        assert_eq!(encrypt_token_key(&KEY, &IV, ""), "YA0Ho7myxOQIIVPW0XB6pg==");
        // Wrong key or garbage does not decrypt to text.
        let mut other = KEY;
        other[0] ^= 1;
        assert_ne!(
            decrypt_token_key(&other, &IV, expected).as_deref(),
            Some("AUTH_20231225_0123456789")
        );
        assert_eq!(decrypt_token_key(&KEY, &IV, "not base64!"), None);
    }

    #[test]
    fn sealed_values_open_only_with_their_secret_and_unaltered() {
        let sealed = seal("secret-a", "AUTHZ-7f3c9a21");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("AUTHZ"));
        assert_ne!(
            sealed,
            seal("secret-a", "AUTHZ-7f3c9a21"),
            "a fresh IV each time"
        );
        assert_eq!(
            unseal("secret-a", &sealed).as_deref(),
            Some("AUTHZ-7f3c9a21")
        );
        assert_eq!(unseal("secret-b", &sealed), None);
        let mut altered = sealed.clone().into_bytes();
        let i = altered.len() / 2;
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            unseal("secret-a", &String::from_utf8(altered).unwrap()),
            None
        );
        assert_eq!(unseal("secret-a", "AUTHZ-plain"), None);
        assert_eq!(unseal("secret-a", "v1:"), None);
    }
}
