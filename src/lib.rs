//! kicc-checkout: a merchant checkout for the KICC (EasyPay) gateway — WeChat Pay and KICC Pay —
//! with a sandbox gateway that speaks KICC's protocol.

pub mod checkout;
pub mod config;
pub mod db;
pub mod domain;
pub mod faults;
pub mod kicc;
pub mod review;
pub mod sandbox;
pub mod startup;
pub mod text;
pub mod web;
