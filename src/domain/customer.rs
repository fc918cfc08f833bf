//! Customer fields with KICC's byte limits (spec 01, customerInfo).

use std::fmt;

use super::{ValidationError, check_kicc_text};

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_newtype!(
    /// customerId: 1–20 bytes (spec 01).
    CustomerId
);
text_newtype!(
    /// customerName: 1–20 bytes (spec 01); any script, counted in UTF-8 bytes.
    CustomerName
);
text_newtype!(
    /// customerMail: an address of at most 50 bytes (spec 01).
    CustomerMail
);
text_newtype!(
    /// customerContactNo: 8–11 digits, "Numbers only" (spec 01).
    CustomerContactNo
);
text_newtype!(
    /// customerAddr: 1–200 bytes (spec 01).
    CustomerAddr
);

fn required(field: &'static str, s: &str) -> Result<String, ValidationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    Ok(s.to_owned())
}

impl CustomerId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = required("customerId", s)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "customerId",
                "may contain only ASCII letters, digits and symbols",
            ));
        }
        check_kicc_text("customerId", &s, 20)?;
        Ok(Self(s))
    }
}

impl CustomerName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = required("customerName", s)?;
        check_kicc_text("customerName", &s, 20)?;
        Ok(Self(s))
    }
}

impl CustomerMail {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = required("customerMail", s)?;
        check_kicc_text("customerMail", &s, 50)?;
        let valid = match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && s.is_ascii()
                    && !s.contains(char::is_whitespace)
            }
            None => false,
        };
        if !valid {
            return Err(ValidationError::new(
                "customerMail",
                "is not an email address",
            ));
        }
        Ok(Self(s))
    }
}

impl CustomerContactNo {
    /// Accepts what people type (`010-1234-5678`, `010 1234 5678`) and keeps the digits.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = required("customerContactNo", s)?;
        let digits: String = s.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::new(
                "customerContactNo",
                "may contain digits only",
            ));
        }
        if !(8..=11).contains(&digits.len()) {
            return Err(ValidationError::new(
                "customerContactNo",
                format!("has {} digits; KICC accepts 8 to 11", digits.len()),
            ));
        }
        Ok(Self(digits))
    }
}

impl CustomerAddr {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = required("customerAddr", s)?;
        check_kicc_text("customerAddr", &s, 200)?;
        Ok(Self(s))
    }
}

/// The customer of one order, every field already within KICC's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub name: CustomerName,
    pub mail: CustomerMail,
    pub contact_no: CustomerContactNo,
    pub addr: CustomerAddr,
}

impl Customer {
    /// Parses every field and returns all the problems at once, so a form can show each next to
    /// its input. `id` is the merchant's customer id (a guest id when the shopper has no account).
    pub fn parse(
        id: &str,
        name: &str,
        mail: &str,
        contact_no: &str,
        addr: &str,
    ) -> Result<Self, Vec<ValidationError>> {
        let id = CustomerId::parse(id);
        let name = CustomerName::parse(name);
        let mail = CustomerMail::parse(mail);
        let contact_no = CustomerContactNo::parse(contact_no);
        let addr = CustomerAddr::parse(addr);
        match (id, name, mail, contact_no, addr) {
            (Ok(id), Ok(name), Ok(mail), Ok(contact_no), Ok(addr)) => Ok(Self {
                id,
                name,
                mail,
                contact_no,
                addr,
            }),
            (id, name, mail, contact_no, addr) => Err([
                id.err(),
                name.err(),
                mail.err(),
                contact_no.err(),
                addr.err(),
            ]
            .into_iter()
            .flatten()
            .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_limits_follow_spec_01() {
        assert!(CustomerName::parse(&"a".repeat(20)).is_ok());
        assert!(CustomerName::parse(&"a".repeat(21)).is_err());
        // Hangul is 3 bytes in UTF-8: 6 syllables = 18 bytes fit, 7 = 21 do not.
        assert!(CustomerName::parse("홍길동홍길동").is_ok());
        assert!(CustomerName::parse("홍길동홍길동홍").is_err());
        assert!(CustomerAddr::parse(&"a".repeat(200)).is_ok());
        assert!(CustomerAddr::parse(&"a".repeat(201)).is_err());
        assert!(CustomerId::parse(&"a".repeat(21)).is_err());
        let long_mail = format!("{}@example.com", "a".repeat(39));
        assert_eq!(long_mail.len(), 51);
        assert!(CustomerMail::parse(&long_mail).is_err());
    }

    #[test]
    fn contact_number_is_digits() {
        assert_eq!(
            CustomerContactNo::parse("010-1234-5678").unwrap().as_str(),
            "01012345678"
        );
        assert!(CustomerContactNo::parse("+821012345678").is_err());
        assert!(CustomerContactNo::parse("010123456789").is_err());
        assert!(CustomerContactNo::parse("0101234").is_err());
        assert!(CustomerContactNo::parse("010-12x4-5678").is_err());
    }

    #[test]
    fn mail_must_look_like_an_address() {
        assert!(CustomerMail::parse("test@email.com").is_ok());
        for bad in [
            "",
            "test",
            "a@b",
            "a@@b.com",
            "@b.com",
            "a b@c.com",
            "a@b.com.",
        ] {
            assert!(CustomerMail::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn customer_collects_every_problem() {
        let errors = Customer::parse("User123", "", "nope", "12", "Seoul").unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["customerName", "customerMail", "customerContactNo"]
        );
        let ok = Customer::parse(
            "User123",
            "John Doe",
            "test@email.com",
            "01012345678",
            "Seoul, Korea",
        );
        assert!(ok.is_ok());
    }
}
