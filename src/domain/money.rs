//! Money as integer minor units with its currency beside it; never floats.
//!
//! KICC takes amounts in minor units: KRW has none, USD is sent ×100 (spec 01, amountInfo:
//! "$12.03 -> 1203"), so the wire amount is exactly `Money::minor()`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// The currencies KICC's WeChat Pay accepts (spec 01, amountInfo.currency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "KRW")]
    Krw,
    #[serde(rename = "USD")]
    Usd,
}

impl Currency {
    pub const ALL: [Currency; 2] = [Currency::Krw, Currency::Usd];

    /// ISO 4217 code, as KICC spells it.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Krw => "KRW",
            Currency::Usd => "USD",
        }
    }

    /// Digits after the decimal point.
    pub fn minor_digits(self) -> u32 {
        match self {
            Currency::Krw => 0,
            Currency::Usd => 2,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Currency::Krw => "₩",
            Currency::Usd => "$",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "KRW" => Ok(Currency::Krw),
            "USD" => Ok(Currency::Usd),
            other => Err(ValidationError::new(
                "currency",
                format!("`{other}` is not supported; use KRW or USD"),
            )),
        }
    }
}

/// A non-negative amount in minor units of its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// `minor` must be ≥ 0.
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Self, ValidationError> {
        if minor < 0 {
            return Err(ValidationError::new("amount", "must not be negative"));
        }
        Ok(Self { minor, currency })
    }

    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    /// Parses a decimal amount a person typed ("12.03", "12,000", "12000"), exactly, without
    /// floating point. More fraction digits than the currency has is an error, not a rounding.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Self, ValidationError> {
        let cleaned: String = text.trim().chars().filter(|c| *c != ',').collect();
        let invalid = || {
            ValidationError::new(
                "amount",
                format!("`{}` is not an amount in {}", text.trim(), currency.code()),
            )
        };
        let (whole, frac) = match cleaned.split_once('.') {
            Some((w, f)) => (w, f),
            None => (cleaned.as_str(), ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let digits = currency.minor_digits() as usize;
        if frac.len() > digits {
            return Err(ValidationError::new(
                "amount",
                format!(
                    "{} has at most {digits} digits after the point",
                    currency.code()
                ),
            ));
        }
        let scale = 10i64.pow(currency.minor_digits());
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let frac_minor: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<digits$}").parse().map_err(|_| invalid())?
        };
        let minor = whole
            .checked_mul(scale)
            .and_then(|m| m.checked_add(frac_minor))
            .ok_or_else(|| ValidationError::new("amount", "is too large"))?;
        Self::from_minor(minor, currency)
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    /// Sum of two amounts of the same currency; `None` on a currency mix or overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        Some(Money {
            minor: self.minor.checked_add(other.minor)?,
            currency: self.currency,
        })
    }

    /// Difference of two amounts of the same currency; `None` on a mix or if it would go below 0.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        let minor = self.minor.checked_sub(other.minor)?;
        (minor >= 0).then_some(Money {
            minor,
            currency: self.currency,
        })
    }

    /// The amount times a quantity (a cart line); `None` on overflow.
    pub fn checked_mul(self, quantity: i64) -> Option<Money> {
        if quantity < 0 {
            return None;
        }
        Some(Money {
            minor: self.minor.checked_mul(quantity)?,
            currency: self.currency,
        })
    }

    /// The amount without symbol, grouped: `12,000` or `12.03`.
    pub fn format_plain(self) -> String {
        let scale = 10i64.pow(self.currency.minor_digits());
        let whole = group_thousands(self.minor / scale);
        match self.currency.minor_digits() {
            0 => whole,
            d => format!("{whole}.{:0width$}", self.minor % scale, width = d as usize),
        }
    }
}

/// `₩12,000`, `$12.03`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.currency.symbol(), self.format_plain())
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_per_currency() {
        assert_eq!(
            Money::from_minor(12000, Currency::Krw).unwrap().to_string(),
            "₩12,000"
        );
        assert_eq!(
            Money::from_minor(1203, Currency::Usd).unwrap().to_string(),
            "$12.03"
        );
        assert_eq!(
            Money::from_minor(5, Currency::Usd).unwrap().to_string(),
            "$0.05"
        );
        assert_eq!(
            Money::from_minor(0, Currency::Krw).unwrap().to_string(),
            "₩0"
        );
        assert_eq!(
            Money::from_minor(1_234_567_890, Currency::Krw)
                .unwrap()
                .to_string(),
            "₩1,234,567,890"
        );
        assert_eq!(
            Money::from_minor(100_000, Currency::Usd)
                .unwrap()
                .to_string(),
            "$1,000.00"
        );
    }

    #[test]
    fn parses_major_units_exactly() {
        let usd = |s| Money::parse_major(s, Currency::Usd).map(Money::minor);
        assert_eq!(usd("12.03"), Ok(1203));
        assert_eq!(usd("12.3"), Ok(1230));
        assert_eq!(usd("12"), Ok(1200));
        assert_eq!(usd("1,000.50"), Ok(100050));
        assert!(usd("12.035").is_err());
        assert!(usd("-1").is_err());
        assert!(usd("abc").is_err());
        assert!(usd(".5").is_err());
        assert!(usd("99999999999999999999").is_err());
        let krw = |s| Money::parse_major(s, Currency::Krw).map(Money::minor);
        assert_eq!(krw("12,000"), Ok(12000));
        assert!(krw("12000.5").is_err());
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies_and_overflow() {
        let krw = Money::from_minor(100, Currency::Krw).unwrap();
        let usd = Money::from_minor(100, Currency::Usd).unwrap();
        assert_eq!(krw.checked_add(usd), None);
        assert_eq!(krw.checked_sub(krw.checked_mul(2).unwrap()), None);
        assert_eq!(
            Money::from_minor(i64::MAX, Currency::Krw)
                .unwrap()
                .checked_mul(2),
            None
        );
        assert_eq!(krw.checked_mul(3).unwrap().minor(), 300);
        assert!(Money::from_minor(-1, Currency::Krw).is_err());
    }

    #[test]
    fn currency_codes_round_trip() {
        for c in Currency::ALL {
            assert_eq!(c.code().parse::<Currency>().unwrap(), c);
        }
        assert!("krw".parse::<Currency>().is_err());
        assert!("JPY".parse::<Currency>().is_err());
    }
}
