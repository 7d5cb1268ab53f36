//! The audit trail: every key store call and background action as a CloudTrail-shaped
//! event, appended to a hash chain in the metadata store with HSM-sealed checkpoints, queried
//! with CloudWatch Logs filter patterns, verified end to end, and watched by alarms. Events
//! never hold a plaintext, data key or ciphertext body. The trail never fails silently: a lost
//! event is recorded in the chain, and by default a call whose record cannot be written is
//! refused (see [`log`]).

pub mod alarm;
pub mod checkpoint;
pub mod delivery;
pub mod dispatcher;
pub mod event;
pub mod filter;
pub mod log;
pub mod verify;
