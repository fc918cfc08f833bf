//! `ShopOrderNo`: the merchant order number KICC echoes everywhere (spec 01: 40 bytes, unique).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ValidationError;

/// Unambiguous upper-case letters and digits (no 0/O, 1/I/L) for the random part.
const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const RANDOM_LEN: usize = 8;
pub const MAX_BYTES: usize = 40;

/// A merchant order number: 1–40 bytes of `A–Z a–z 0–9 - _` (KICC-safe: no spaces, no `|`, nothing
/// that needs escaping in a URL or a returnUrl form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ShopOrderNo(String);

impl ShopOrderNo {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() {
            return Err(ValidationError::new("shopOrderNo", "must not be empty"));
        }
        if s.len() > MAX_BYTES {
            return Err(ValidationError::new(
                "shopOrderNo",
                format!(
                    "is {} bytes long; KICC accepts at most {MAX_BYTES}",
                    s.len()
                ),
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ValidationError::new(
                "shopOrderNo",
                "may contain only letters, digits, - and _",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A new number: the UTC date and minute, then 8 random characters, e.g.
    /// `261121-1530-K7QX9M2A` — 20 bytes, because KICC Pay's `mercTrxNo` (which is the order
    /// number) should be at most 20 (spec 06: "send ≤ 20"); 31⁸ ≈ 8.5 × 10¹¹ numbers per minute.
    /// The database's unique index is what finally guarantees uniqueness.
    pub fn generate(now: DateTime<Utc>) -> Self {
        let random = uuid::Uuid::new_v4();
        let suffix: String = random.as_bytes()[..RANDOM_LEN]
            .iter()
            .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
            .collect();
        Self(format!("{}-{suffix}", now.format("%y%m%d-%H%M")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShopOrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ShopOrderNo {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn generated_numbers_parse_and_carry_the_date() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 15, 30, 12).unwrap();
        let no = ShopOrderNo::generate(now);
        assert!(no.as_str().starts_with("261121-1530-"), "{no}");
        assert_eq!(no.as_str().len(), 20);
        assert_eq!(ShopOrderNo::parse(no.as_str()).unwrap(), no);
    }

    #[test]
    fn generated_numbers_differ() {
        let now = Utc::now();
        let set: std::collections::HashSet<_> =
            (0..10_000).map(|_| ShopOrderNo::generate(now)).collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn rejects_unsafe_or_long_numbers() {
        assert!(ShopOrderNo::parse("").is_err());
        assert!(ShopOrderNo::parse(&"A".repeat(41)).is_err());
        assert!(ShopOrderNo::parse(&"A".repeat(40)).is_ok());
        for bad in ["a b", "a|b", "a/b", "주문1", "a%20", "a\nb", "<script>"] {
            assert!(ShopOrderNo::parse(bad).is_err(), "{bad}");
        }
        assert!(ShopOrderNo::parse("ORD_2023-12_25").is_ok());
    }
}
