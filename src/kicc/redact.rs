//! Masks what must never be stored or logged: the KICC Pay tokenKey (it decrypts to the
//! authorizationId), the authorizationId itself, and any secret-looking field.

/// JSON keys whose values are replaced, wherever they appear.
const MASKED_KEYS: &[&str] = &["tokenKey", "authorizationId", "secretKey", "password"];
const MAX_STORED: usize = 16 * 1024;

/// The body as it may be stored: JSON with masked fields, or for a body that is not JSON a note
/// and its first bytes (a malformed reply must still be inspectable).
pub fn redact_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            mask(&mut value);
            value.to_string()
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let shown: String = text.chars().take(2000).collect();
            let mut out = format!("[not JSON, {} bytes] {shown}", body.len());
            out.truncate(MAX_STORED);
            out
        }
    }
}

fn mask(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if MASKED_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                    *inner = serde_json::Value::String("[redacted]".into());
                } else {
                    mask(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_token_and_authorization_at_any_depth() {
        let body = br#"{"tid":"T1","tokenKey":"SECRET-TOKEN","nested":{"authorizationId":"AUTH-1","x":[{"AuthorizationId":"AUTH-2"}]},"amount":1000}"#;
        let out = redact_body(body);
        for secret in ["SECRET-TOKEN", "AUTH-1", "AUTH-2"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(
            out.contains("\"tid\":\"T1\"") && out.contains("\"amount\":1000"),
            "{out}"
        );
    }

    #[test]
    fn keeps_a_readable_prefix_of_non_json() {
        let out = redact_body(b"<html>Bad Gateway</html>");
        assert!(out.starts_with("[not JSON, 24 bytes] <html>"), "{out}");
    }
}
