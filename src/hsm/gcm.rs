//! Checked AES-GCM parameters and results. SoftHSM2 accepts a zero-length tag and a
//! zero-length IV and misbehaves on an empty AAD; hsm-kms admits only 12-byte IVs, 128-bit
//! tags and a non-empty AAD, and these types are the only way to hand GCM parameters to a
//! member. An encryption takes no IV from its caller: HSMs in FIPS mode (AWS CloudHSM)
//! write their own IV into the parameters during `C_Encrypt`, so the member reads the IV
//! back after the call and returns it in [`Sealed`], the only IV a caller can store.

use super::error::Failure;

/// IV length hsm-kms uses for AES-GCM.
pub const IV_LEN: usize = 12;
/// Tag length hsm-kms uses for AES-GCM.
pub const TAG_LEN: usize = 16;

/// Validated AES-GCM parameters for a decryption: the IV an encryption returned, and the AAD.
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
        check_tag_and_aad(aad, tag_bits)?;
        Ok(Gcm { iv, aad })
    }

    /// The IV.
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }
}

/// Validated AES-GCM parameters for an encryption: the AAD and nothing the caller could
/// mistake for the IV the HSM used.
#[derive(Debug, Clone, Copy)]
pub struct GcmSeal<'a> {
    pub(crate) aad: &'a [u8],
}

impl<'a> GcmSeal<'a> {
    /// Checks the parameters: 128-bit tag, non-empty AAD.
    pub fn new(aad: &'a [u8], tag_bits: usize) -> Result<GcmSeal<'a>, Failure> {
        check_tag_and_aad(aad, tag_bits)?;
        Ok(GcmSeal { aad })
    }
}

/// What an AES-GCM encryption produced: the IV the HSM actually used and ciphertext || tag.
/// Only a member builds one, from the IV buffer as the HSM left it after `C_Encrypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    iv: [u8; IV_LEN],
    ciphertext_and_tag: Vec<u8>,
}

impl Sealed {
    /// The result of one `C_Encrypt`: `iv` must be the IV buffer read back after the call.
    pub(super) fn new(iv: [u8; IV_LEN], ciphertext_and_tag: Vec<u8>) -> Sealed {
        Sealed {
            iv,
            ciphertext_and_tag,
        }
    }

    /// The IV the HSM used: store this one with the ciphertext.
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }

    /// The ciphertext followed by the 16-byte tag.
    pub fn ciphertext_and_tag(&self) -> &[u8] {
        &self.ciphertext_and_tag
    }

    /// The parameters that decrypt this ciphertext, with the AAD it was sealed with.
    pub fn gcm<'a>(&self, sealed_with: &GcmSeal<'a>) -> Gcm<'a> {
        Gcm {
            iv: self.iv,
            aad: sealed_with.aad,
        }
    }

    /// The IV and the ciphertext || tag.
    pub fn into_parts(self) -> ([u8; IV_LEN], Vec<u8>) {
        (self.iv, self.ciphertext_and_tag)
    }
}

fn check_tag_and_aad(aad: &[u8], tag_bits: usize) -> Result<(), Failure> {
    if tag_bits != TAG_LEN * 8 {
        return Err(Failure::InvalidInput("AES-GCM needs a 128-bit tag"));
    }
    if aad.is_empty() {
        return Err(Failure::InvalidInput("AES-GCM needs non-empty AAD"));
    }
    Ok(())
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
        assert!(GcmSeal::new(b"aad", 128).is_ok());
        assert!(GcmSeal::new(b"aad", 96).is_err());
        assert!(GcmSeal::new(b"", 128).is_err());
    }

    #[test]
    fn a_sealed_result_decrypts_with_its_own_iv() {
        let seal = GcmSeal::new(b"aad", 128).unwrap();
        let sealed = Sealed::new([9; IV_LEN], vec![1; 17]);
        let gcm = sealed.gcm(&seal);
        assert_eq!((gcm.iv(), gcm.aad), (&[9; IV_LEN], &b"aad"[..]));
    }
}
