//! Checked AES-GCM parameters. SoftHSM2 accepts a zero-length tag and a zero-length IV and
//! misbehaves on an empty AAD; hsm-kms admits only 12-byte IVs, 128-bit tags and a non-empty
//! AAD, and this type is the only way to hand GCM parameters to a member.

use super::error::Failure;

/// IV length hsm-kms uses for AES-GCM.
pub const IV_LEN: usize = 12;
/// Tag length hsm-kms uses for AES-GCM.
pub const TAG_LEN: usize = 16;

/// Validated AES-GCM parameters for one call.
#[derive(Debug, Clone, Copy)]
pub struct Gcm<'a> {
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) aad: &'a [u8],
}

impl<'a> Gcm<'a> {
    /// Checks the parameters: 12-byte IV, 128-bit tag, non-empty AAD.
    pub fn new(iv: &[u8], aad: &'a [u8], tag_bits: usize) -> Result<Gcm<'a>, Failure> {
        let iv: [u8; IV_LEN] = iv
            .try_into()
            .map_err(|_| Failure::InvalidInput("AES-GCM needs a 12-byte IV"))?;
        if tag_bits != TAG_LEN * 8 {
            return Err(Failure::InvalidInput("AES-GCM needs a 128-bit tag"));
        }
        if aad.is_empty() {
            return Err(Failure::InvalidInput("AES-GCM needs non-empty AAD"));
        }
        Ok(Gcm { iv, aad })
    }

    /// The IV.
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_softhsm_would_wrongly_accept() {
        assert!(Gcm::new(&[0; 12], b"aad", 128).is_ok());
        assert!(Gcm::new(&[], b"aad", 128).is_err());
        assert!(Gcm::new(&[0; 16], b"aad", 128).is_err());
        assert!(Gcm::new(&[0; 12], b"aad", 0).is_err());
        assert!(Gcm::new(&[0; 12], b"aad", 96).is_err());
        assert!(Gcm::new(&[0; 12], b"", 128).is_err());
    }
}
