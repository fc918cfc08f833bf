//! Domain values parsed once at the edge, and the order state machine: pure, no I/O.
//!
//! Every type here has a private inner value and a `parse` constructor, so a value that
//! exists is a value that satisfies KICC's limits (spec 01) and our own rules.

mod catalog;
mod customer;
mod goods;
mod money;
mod order;
mod order_no;
mod payment;
mod status;

pub use catalog::Product;
pub use customer::{
    Customer, CustomerAddr, CustomerContactNo, CustomerId, CustomerMail, CustomerName,
};
pub use goods::GoodsName;
pub use money::{Currency, Money};
pub use order::{Order, OrderLine, TimelineEntry};
pub use order_no::ShopOrderNo;
pub use payment::{LatePayments, PayMethod, TradeType};
pub use status::{OrderEvent, OrderStatus, TransitionError};

/// A value that failed its parse constructor: which field, and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Checks shared by every text field we send to KICC: a byte limit (KICC counts bytes, spec 01;
/// we count UTF-8 bytes, which is never fewer than KICC's own count), no control characters, and
/// no `|`, which KICC forbids inside request fields because it joins msgAuthValue inputs (spec 06).
pub(crate) fn check_kicc_text(
    field: &'static str,
    value: &str,
    max_bytes: usize,
) -> Result<(), ValidationError> {
    if value.len() > max_bytes {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes long; KICC accepts at most {max_bytes}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    if value.contains('|') {
        return Err(ValidationError::new(
            field,
            "must not contain the character |",
        ));
    }
    Ok(())
}
