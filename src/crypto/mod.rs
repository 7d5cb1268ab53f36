//! Cryptographic formats: the ciphertext blob and the canonical encryption
//! context bound into it. Pure byte layouts; the AES work itself happens only
//! inside the HSMs, never here.

pub mod blob;
pub mod context;
