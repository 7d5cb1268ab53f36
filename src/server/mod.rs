//! The AWS KMS JSON 1.1 endpoint: what an unmodified AWS SDK, the AWS CLI or the AWS
//! Encryption SDK talks to when pointed at hsm-kms. So far this module holds request
//! authentication ([`sigv4`]); it never touches keys or the HSMs itself.

pub mod sigv4;
