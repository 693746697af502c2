//! syncd: keeps SQLite databases in sync between machines through a shared
//! folder or an S3 bucket (the hub). This library is the engine; the `syncd`
//! binary and the end-to-end tests drive the same code.

pub mod apply;
pub mod batch;
pub mod borrowing_statement;
pub mod capture;
pub mod config;
pub mod constraints;
pub mod container;
pub mod engine;
pub mod heartbeat;
pub mod hlc;
pub mod hub;
pub mod identity;
pub mod merge;
pub mod once;
pub mod outbox;
pub mod retention;
pub mod schema;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod triggers;
pub mod value;
