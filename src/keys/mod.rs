//! Keys: their metadata, lifecycle and the rules that tie operations to key
//! states. This layer decides what is allowed; it never touches an HSM or the
//! metadata store itself.

pub mod state;
