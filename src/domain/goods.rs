//! `GoodsName`: the product name KICC shows the shopper (spec 01: "English Only", 100 bytes).

use std::fmt;

use super::{ValidationError, check_kicc_text};

pub const MAX_BYTES: usize = 100;

/// 1–100 bytes of printable ASCII (spec 01 says "English Only"), without `|` (spec 06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodsName(String);

impl GoodsName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ValidationError::new("goodsName", "must not be empty"));
        }
        if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ValidationError::new(
                "goodsName",
                "must be English: printable ASCII characters only (KICC spec 01)",
            ));
        }
        check_kicc_text("goodsName", s, MAX_BYTES)?;
        Ok(Self(s.to_owned()))
    }

    /// The goods name for a cart: the first item's name, then " and N more", shortened to fit
    /// 100 bytes. `names` must already be English (catalog names are checked when seeded).
    pub fn for_cart<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, ValidationError> {
        let names: Vec<&str> = names.into_iter().collect();
        let first = names
            .first()
            .ok_or_else(|| ValidationError::new("goodsName", "the cart is empty"))?;
        let tail = match names.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        let room = MAX_BYTES.saturating_sub(tail.len());
        let head = if first.len() > room {
            // ASCII-only (checked below), so any byte index is a char boundary.
            format!("{}...", first[..room.saturating_sub(3)].trim_end())
        } else {
            (*first).to_owned()
        };
        Self::parse(&format!("{head}{tail}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GoodsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_english_up_to_100_bytes() {
        assert_eq!(
            GoodsName::parse(" Classic Tee ").unwrap().as_str(),
            "Classic Tee"
        );
        assert!(GoodsName::parse(&"x".repeat(100)).is_ok());
        assert!(GoodsName::parse(&"x".repeat(101)).is_err());
    }

    #[test]
    fn rejects_non_english_and_separators() {
        for bad in ["티셔츠", "Café", "", "   ", "a|b", "tab\there"] {
            assert!(GoodsName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cart_names_fit() {
        assert_eq!(GoodsName::for_cart(["Mug"]).unwrap().as_str(), "Mug");
        assert_eq!(
            GoodsName::for_cart(["Mug", "Tee", "Cap"]).unwrap().as_str(),
            "Mug and 2 more"
        );
        let long = "L".repeat(150);
        let name = GoodsName::for_cart([long.as_str(), "Tee"]).unwrap();
        assert!(name.as_str().len() <= 100);
        assert!(name.as_str().ends_with("... and 1 more"));
        assert!(GoodsName::for_cart(Vec::<&str>::new()).is_err());
    }
}
