//! Key metadata: the key-state machine and its effects table, and the records the store keeps
//! for keys, aliases and pending HSM changes.

pub mod records;
pub mod spec;
pub mod state;
