//! Raw PKCS#11 beside hsm-kms, for the benchmarks' references: a logged-in session on a
//! member's token opened outside the key store, its objects, and AES-GCM through it.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};

use hsm_kms::config::MemberConfig;
use hsm_kms::crypto::blob::IV_LEN;

use super::Res;

/// A logged-in read-write session on `member`'s token. The module is opened again: hsm-kms
/// has already initialised it and logged in (one module instance per process).
pub fn open_session(member: &MemberConfig) -> Res<Session> {
    let pkcs11 = Pkcs11::new(&member.module)?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => return Err(error.into()),
    }
    let slot = pkcs11
        .get_slots_with_initialized_token()?
        .into_iter()
        .find(|slot| {
            pkcs11.get_token_info(*slot).is_ok_and(|info| {
                member.token.matches(
                    info.label(),
                    info.serial_number(),
                    info.manufacturer_id(),
                    info.model(),
                )
            })
        })
        .ok_or_else(|| format!("no token for member {}", member.name))?;
    let session = pkcs11.open_rw_session(slot)?;
    let pin = member.user_pin.resolve()?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(session)
}

/// The one object `template` finds on `member`'s token.
pub fn one(session: &Session, template: &[Attribute], member: &str) -> Res<ObjectHandle> {
    let found = session.find_objects(template)?;
    match found.as_slice() {
        [handle] => Ok(*handle),
        _ => Err(format!("{} objects match on {member}, expected one", found.len()).into()),
    }
}

/// A fresh IV per raw call: `lane` tells cases and threads apart, `slice` counts timed slices
/// and `n` counts calls within one.
pub fn iv(lane: u8, slice: u32, n: u64) -> [u8; IV_LEN] {
    let mut iv = [0; IV_LEN];
    iv[0] = lane;
    iv[1..4].copy_from_slice(&slice.to_be_bytes()[1..]);
    iv[4..].copy_from_slice(&n.to_be_bytes());
    iv
}

/// Which way a raw AES-GCM call goes.
#[derive(Clone, Copy)]
pub enum Gcm {
    /// `C_Encrypt`: plaintext in, ciphertext then tag out.
    Encrypt,
    /// `C_Decrypt`: ciphertext then tag in, plaintext out.
    Decrypt,
}

/// Raw `C_Encrypt` or `C_Decrypt` with AES-GCM (128-bit tag) under `key`.
pub fn gcm(
    session: &Session,
    way: Gcm,
    key: ObjectHandle,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    data: &[u8],
) -> Res<Vec<u8>> {
    let mut iv = *iv;
    let mechanism = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?);
    Ok(match way {
        Gcm::Encrypt => session.encrypt(&mechanism, key, data)?,
        Gcm::Decrypt => session.decrypt(&mechanism, key, data)?,
    })
}
