//! How an order is paid: the payment method and, for WeChat Pay, the trade type (spec 01).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayMethod {
    /// WeChat Pay through KICC (spec 01, 02, 04, 05).
    Wechat,
    /// KICC Pay simple payment (spec 03).
    Kiccpay,
}

impl PayMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PayMethod::Wechat => "wechat",
            PayMethod::Kiccpay => "kiccpay",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PayMethod::Wechat => "WeChat Pay",
            PayMethod::Kiccpay => "KICC Pay",
        }
    }
}

impl fmt::Display for PayMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PayMethod {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wechat" => Ok(PayMethod::Wechat),
            "kiccpay" => Ok(PayMethod::Kiccpay),
            other => Err(ValidationError::new(
                "payMethod",
                format!("`{other}` is not a payment method; use wechat or kiccpay"),
            )),
        }
    }
}

/// WeChat Pay trade type (spec 01): `native` returns a code URL for a QR code (desktop),
/// `mweb` a page the phone's browser is redirected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeType {
    Native,
    Mweb,
}

impl TradeType {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeType::Native => "native",
            TradeType::Mweb => "mweb",
        }
    }
}

impl fmt::Display for TradeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TradeType {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(TradeType::Native),
            "mweb" => Ok(TradeType::Mweb),
            other => Err(ValidationError::new(
                "tradeType",
                format!("`{other}` is not a trade type; use native or mweb"),
            )),
        }
    }
}

/// What an approval for an order that had stopped waiting for it (expired or failed) does
/// (`LATE_PAYMENTS`). Either way the money and the order agree afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatePayments {
    /// The order becomes `paid` (amount and currency must match; otherwise it is refunded).
    #[default]
    Accept,
    /// A compensating cancel returns the money; the shopper's order page says why.
    Refund,
}

impl LatePayments {
    pub fn as_str(self) -> &'static str {
        match self {
            LatePayments::Accept => "accept",
            LatePayments::Refund => "refund",
        }
    }
}

impl FromStr for LatePayments {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "accept" => Ok(LatePayments::Accept),
            "refund" => Ok(LatePayments::Refund),
            other => Err(ValidationError::new(
                "LATE_PAYMENTS",
                format!("`{other}` is neither `accept` nor `refund`"),
            )),
        }
    }
}
