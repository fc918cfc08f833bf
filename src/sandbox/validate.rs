//! Field checks of KICC's requests, each answering KICC's code (docs/KICC-ASSUMPTIONS.md):
//! `1001` for a missing field or a value outside its set, `1002` for a value longer than KICC
//! allows or not English where English is required. Lengths are bytes (spec 01's "Byte").

use chrono::{Days, NaiveDate};

use super::wire::{WireAmount, code};

/// Why a request is refused: a KICC code and a message for `resMsg`, and the trade it names
/// when one was found (so the call is listed on that trade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub pg_cno: Option<String>,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            pg_cno: None,
        }
    }

    /// The refusal concerns this trade.
    pub fn about(mut self, pg_cno: &str) -> Self {
        self.pg_cno = Some(pg_cno.to_owned());
        self
    }
}

/// A field that must be present and not empty.
pub fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, Refusal> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Refusal::new(
            code::MALFORMED,
            format!("{field} is required"),
        )),
    }
}

/// An optional field: `None` when absent or empty.
pub fn optional(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub fn max_bytes(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    if value.len() > max {
        return Err(Refusal::new(
            code::TOO_LONG,
            format!("{field} is {} bytes; at most {max} allowed", value.len()),
        ));
    }
    Ok(())
}

/// An identifier: at most `max` bytes, without `|` (forbidden inside KICC fields, spec 06, so
/// that msgAuthValue inputs are unambiguous) or control characters.
pub fn identifier(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    max_bytes(field, value, max)?;
    if value.contains('|') || value.chars().any(char::is_control) {
        return Err(Refusal::new(
            code::MALFORMED,
            format!("{field} must not contain `|` or control characters"),
        ));
    }
    Ok(())
}

/// Printable ASCII only ("English Only", spec 01's goodsName).
pub fn english(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(Refusal::new(
            code::TOO_LONG,
            format!("{field} must be English (printable ASCII)"),
        ));
    }
    max_bytes(field, value, max)
}

/// Digits only, at most `max` of them.
pub fn digits(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::new(
            code::TOO_LONG,
            format!("{field} must be numbers only"),
        ));
    }
    max_bytes(field, value, max)
}

/// An absolute http(s) URL of at most `max` bytes.
pub fn http_url(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    max_bytes(field, value, max)?;
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(Refusal::new(
            code::MALFORMED,
            format!("{field} must be an absolute http(s) URL"),
        )),
    }
}

/// Largest amount the sandbox takes (13 digits: far above any real order).
pub const MAX_AMOUNT: i64 = 9_999_999_999_999;

/// An amount that must be given and be above zero.
pub fn positive(field: &str, value: Option<WireAmount>) -> Result<i64, Refusal> {
    match value {
        None => Err(Refusal::new(
            code::MALFORMED,
            format!("{field} is required"),
        )),
        Some(WireAmount(n)) if n <= 0 => Err(Refusal::new(
            code::MALFORMED,
            format!("{field} must be above zero"),
        )),
        Some(WireAmount(n)) if n > MAX_AMOUNT => Err(Refusal::new(
            code::TOO_LONG,
            format!("{field} is too large"),
        )),
        Some(WireAmount(n)) => Ok(n),
    }
}

/// An amount that may be zero (KICC Pay `vatAmt`).
pub fn not_negative(field: &str, value: Option<WireAmount>) -> Result<i64, Refusal> {
    match value {
        None => Err(Refusal::new(
            code::MALFORMED,
            format!("{field} is required"),
        )),
        Some(WireAmount(n)) if !(0..=MAX_AMOUNT).contains(&n) => Err(Refusal::new(
            code::MALFORMED,
            format!("{field} must be from 0 to {MAX_AMOUNT}"),
        )),
        Some(WireAmount(n)) => Ok(n),
    }
}

/// A `yyyyMMdd` date.
pub fn date8(field: &str, value: &str) -> Result<NaiveDate, Refusal> {
    let bad = || Refusal::new(code::MALFORMED, format!("{field} must be a date yyyyMMdd"));
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    NaiveDate::parse_from_str(value, "%Y%m%d").map_err(|_| bad())
}

/// A request date (`approvalReqDate`, `cancelReqDate`): a real date no further than one day
/// from KICC's today, so clients on UTC or KST both pass and a retry the next day with the
/// original date (spec 06) does too.
pub fn request_date(field: &str, value: &str, today: NaiveDate) -> Result<NaiveDate, Refusal> {
    let date = date8(field, value)?;
    let earliest = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let latest = today.checked_add_days(Days::new(1)).unwrap_or(today);
    if date < earliest || date > latest {
        return Err(Refusal::new(
            code::MALFORMED,
            format!("{field} {value} is not today's date (yyyyMMdd)"),
        ));
    }
    Ok(date)
}

/// An `HHmmss` time (KICC Pay `tranTm`).
pub fn time6(field: &str, value: &str) -> Result<(), Refusal> {
    let bad = || Refusal::new(code::MALFORMED, format!("{field} must be a time HHmmss"));
    if value.len() != 6 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    chrono::NaiveTime::parse_from_str(value, "%H%M%S").map_err(|_| bad())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_answers_its_code() {
        assert_eq!(required("x", &None).unwrap_err().code, "1001");
        assert_eq!(required("x", &Some("  ".into())).unwrap_err().code, "1001");
        assert_eq!(required("x", &Some("a".into())).unwrap(), "a");
        assert_eq!(
            identifier("x", &"a".repeat(41), 40).unwrap_err().code,
            "1002"
        );
        assert!(identifier("x", &"a".repeat(40), 40).is_ok());
        assert_eq!(identifier("x", "a|b", 40).unwrap_err().code, "1001");
        assert_eq!(english("g", "커피", 100).unwrap_err().code, "1002");
        assert_eq!(
            english("g", &"a".repeat(101), 100).unwrap_err().code,
            "1002"
        );
        assert!(english("g", "Sample Product (2x)", 100).is_ok());
        assert_eq!(digits("c", "010-1234", 11).unwrap_err().code, "1002");
        assert_eq!(digits("c", "010123456789", 11).unwrap_err().code, "1002");
        assert_eq!(http_url("u", "ftp://x", 256).unwrap_err().code, "1001");
        assert_eq!(http_url("u", "/relative", 256).unwrap_err().code, "1001");
        assert!(http_url("u", "http://127.0.0.1:8080/checkout/return", 256).is_ok());
        assert_eq!(positive("a", None).unwrap_err().code, "1001");
        assert_eq!(positive("a", Some(WireAmount(0))).unwrap_err().code, "1001");
        assert_eq!(positive("a", Some(WireAmount(1))).unwrap(), 1);
        assert_eq!(not_negative("v", Some(WireAmount(0))).unwrap(), 0);
        assert_eq!(time6("t", "246000").unwrap_err().code, "1001");
        assert!(time6("t", "235959").is_ok());
    }

    #[test]
    fn request_dates_are_today_give_or_take_a_day() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        for ok in ["20260228", "20260301", "20260302"] {
            assert!(request_date("d", ok, today).is_ok(), "{ok}");
        }
        for bad in ["20260227", "20260303", "2026031", "20260230", "2026-03-01"] {
            assert_eq!(
                request_date("d", bad, today).unwrap_err().code,
                "1001",
                "{bad}"
            );
        }
    }
}
