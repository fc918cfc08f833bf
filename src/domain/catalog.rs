//! A product of the catalog, priced in every currency we sell in.

use super::{Currency, Money};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    /// English (it becomes KICC's goodsName, spec 01).
    pub name: String,
    pub description: String,
    pub price_krw: Money,
    pub price_usd: Money,
}

impl Product {
    pub fn price(&self, currency: Currency) -> Money {
        match currency {
            Currency::Krw => self.price_krw,
            Currency::Usd => self.price_usd,
        }
    }
}
