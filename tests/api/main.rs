//! Integration tests: one binary, real SQLite files and a real PostgreSQL server.
//! Database tests run on both backends (`both_backends!`): `<test>::sqlite` and `<test>::postgres`.

#[macro_use]
mod helpers;

mod admin;
mod admin_sessions;
mod browser;
mod cart;
mod checkout;
mod cli;
mod contract;
mod crash;
mod group_commit;
mod hardening;
mod harness;
mod hostile_web;
mod idempotency;
mod kicc_client;
mod late_events;
mod migrations;
mod money_property;
mod reconciler;
mod review;
mod sandbox;
mod serving;
mod state_machine;
mod webhooks;
