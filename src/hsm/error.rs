//! The one error type of the HSM layer: which member, which PKCS#11 function, which `CKR_`
//! code, and what the failure means for routing ([`Disposition`]). Every `cryptoki` error
//! passes through [`HsmError::pkcs11`], the single choke point that classifies it.

use std::fmt;
use std::path::PathBuf;

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};

/// What a failure means for the caller that routes operations over a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The member is unreachable or broken: mark it down, retry on another member.
    Unavailable,
    /// This member cannot serve this call (object missing, out of sessions): try another.
    RetryElsewhere,
    /// The input is wrong; no member would accept it.
    Caller,
    /// A fault that retrying will not fix.
    Permanent,
}

/// Why one member failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The PKCS#11 module file does not exist.
    ModuleMissing(PathBuf),
    /// The module exists but could not be loaded or initialised.
    ModuleLoad(String),
    /// No slot holds an initialised token matching the selector.
    TokenMissing(String),
    /// Login refused the PIN (`CKR_PIN_INCORRECT`).
    WrongPin,
    /// The PIN is locked (`CKR_PIN_LOCKED`).
    PinLocked,
    /// The PIN reference could not be resolved.
    PinUnavailable(String),
    /// The token does not hold the cluster domain key.
    DomainKeyMissing,
    /// The member is marked down and is being reconnected.
    Down,
    /// All sessions of the member stayed busy for too long.
    Busy,
    /// The key object with this CKA_ID (hex) is not on the member.
    KeyMissing(String),
    /// A PKCS#11 call failed.
    Pkcs11 {
        /// The PKCS#11 function that failed.
        function: Function,
        /// Its `CKR_` code.
        rv: RvError,
    },
    /// Input rejected before it reached the HSM.
    InvalidInput(&'static str),
    /// A healthy HSM rejected a ciphertext (tag, AAD or IV do not match).
    Rejected,
    /// Anything else the PKCS#11 wrapper reported.
    Other(String),
}

/// A failure of one HSM member.
#[derive(Debug, Clone, thiserror::Error)]
#[error("HSM member {member}: {failure}")]
pub struct HsmError {
    /// The member that failed.
    pub member: String,
    /// What went wrong.
    pub failure: Failure,
}

impl HsmError {
    /// A failure of `member`.
    pub fn new(member: &str, failure: Failure) -> HsmError {
        HsmError {
            member: member.to_owned(),
            failure,
        }
    }

    /// Classifies an error returned by `cryptoki`.
    pub fn pkcs11(member: &str, error: CryptokiError) -> HsmError {
        let failure = match error {
            CryptokiError::Pkcs11(RvError::PinIncorrect, _) => Failure::WrongPin,
            CryptokiError::Pkcs11(RvError::PinLocked, _) => Failure::PinLocked,
            CryptokiError::Pkcs11(rv, function) => Failure::Pkcs11 { function, rv },
            CryptokiError::LibraryLoading(e) => Failure::ModuleLoad(e.to_string()),
            other => Failure::Other(other.to_string()),
        };
        HsmError::new(member, failure)
    }

    /// What this failure means for routing.
    pub fn disposition(&self) -> Disposition {
        match &self.failure {
            Failure::ModuleMissing(_)
            | Failure::ModuleLoad(_)
            | Failure::TokenMissing(_)
            | Failure::DomainKeyMissing
            | Failure::Down => Disposition::Unavailable,
            Failure::Busy | Failure::KeyMissing(_) => Disposition::RetryElsewhere,
            Failure::WrongPin | Failure::PinLocked | Failure::PinUnavailable(_) => {
                Disposition::Permanent
            }
            Failure::InvalidInput(_) | Failure::Rejected => Disposition::Caller,
            Failure::Pkcs11 { rv, .. } => classify(*rv),
            Failure::Other(_) => Disposition::Permanent,
        }
    }

    /// Whether the HSM may have rejected the caller's input rather than failed: a ciphertext
    /// (bad tag, AAD, IV, length or RSA padding), wrapped key material it could not unwrap
    /// (imported material under the wrong key or algorithm), or a peer's public point off the
    /// key's curve (ECDH).
    ///
    /// SoftHSM2 answers each of these with `CKR_GENERAL_ERROR`, the same code a vanished
    /// token gives; the caller must probe the member before believing it, and must not take
    /// the member for down on it alone (a caller could otherwise take members down at will).
    pub fn may_be_bad_input(&self) -> bool {
        matches!(
            self.failure,
            Failure::Pkcs11 {
                rv: RvError::GeneralError
                    | RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange,
                function: Function::Decrypt
                    | Function::DecryptInit
                    | Function::UnwrapKey
                    | Function::DeriveKey,
            } | Failure::Pkcs11 {
                // Imported material that opened but is no private key of the template's type:
                // SoftHSM2 cannot decode the PKCS #8 structure into the object.
                rv: RvError::FunctionFailed,
                function: Function::UnwrapKey,
            }
        )
    }

    /// Whether the HSM refused a mechanism's parameters (SoftHSM2 2.6 takes only SHA-1 for
    /// RSA-OAEP, answering `CKR_ARGUMENTS_BAD` to SHA-256): the algorithm is not available on
    /// this HSM, which is no fault of the member nor of the caller's input.
    pub fn refuses_mechanism_parameters(&self) -> bool {
        matches!(
            self.failure,
            Failure::Pkcs11 {
                rv: RvError::ArgumentsBad
                    | RvError::MechanismParamInvalid
                    | RvError::MechanismInvalid,
                ..
            }
        )
    }

    /// Whether the module lacks a function (`CKR_FUNCTION_NOT_SUPPORTED`), e.g. a vendor
    /// module that keeps `C_GenerateKeyPair` and `C_UnwrapKey` to its own tools.
    pub fn lacks_import_functions(&self) -> bool {
        matches!(
            self.failure,
            Failure::Pkcs11 {
                rv: RvError::FunctionNotSupported,
                ..
            }
        )
    }
}

fn classify(rv: RvError) -> Disposition {
    use RvError::*;
    match rv {
        DeviceError
        | DeviceRemoved
        | DeviceMemory
        | TokenNotPresent
        | TokenNotRecognized
        | SessionHandleInvalid
        | SessionClosed
        | CryptokiNotInitialized
        | UserNotLoggedIn
        | SlotIdInvalid
        | GeneralError
        | FunctionFailed => Disposition::Unavailable,
        ObjectHandleInvalid | KeyHandleInvalid | SessionCount | OperationActive => {
            Disposition::RetryElsewhere
        }
        ArgumentsBad
        | DataInvalid
        | DataLenRange
        | EncryptedDataInvalid
        | EncryptedDataLenRange
        | MechanismInvalid
        | MechanismParamInvalid
        | KeyNotWrappable
        | KeyUnextractable
        | KeyFunctionNotPermitted
        | KeyTypeInconsistent
        | KeySizeRange
        | WrappedKeyInvalid
        | WrappedKeyLenRange
        | UnwrappingKeyHandleInvalid
        | WrappingKeyHandleInvalid
        | TemplateIncomplete
        | TemplateInconsistent
        | AttributeValueInvalid
        | AttributeReadOnly
        | AttributeTypeInvalid
        | AttributeSensitive
        | BufferTooSmall
        | ActionProhibited => Disposition::Caller,
        _ => Disposition::Permanent,
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ModuleMissing(path) => {
                write!(f, "PKCS#11 module {} not found", path.display())
            }
            Failure::ModuleLoad(reason) => write!(f, "PKCS#11 module failed to load: {reason}"),
            Failure::TokenMissing(selector) => write!(f, "no initialised token matches {selector}"),
            Failure::WrongPin => f.write_str("login failed: wrong PIN (CKR_PIN_INCORRECT)"),
            Failure::PinLocked => f.write_str("login failed: PIN locked (CKR_PIN_LOCKED)"),
            Failure::PinUnavailable(reason) => write!(f, "PIN unavailable: {reason}"),
            Failure::DomainKeyMissing => {
                f.write_str("the cluster domain key is missing (run `hsm-kms cluster init`)")
            }
            Failure::Down => f.write_str("member is down, reconnecting"),
            Failure::Busy => f.write_str("no free session"),
            Failure::KeyMissing(id) => write!(f, "key object {id} not found"),
            Failure::Pkcs11 { function, rv } => write!(f, "{function} failed: {rv}"),
            Failure::InvalidInput(reason) => write!(f, "rejected before the HSM: {reason}"),
            Failure::Rejected => f.write_str("the HSM rejected the ciphertext"),
            Failure::Other(reason) => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases = [
            (RvError::DeviceRemoved, Disposition::Unavailable),
            (RvError::GeneralError, Disposition::Unavailable),
            (RvError::TokenNotPresent, Disposition::Unavailable),
            (RvError::ObjectHandleInvalid, Disposition::RetryElsewhere),
            (RvError::KeyHandleInvalid, Disposition::RetryElsewhere),
            (RvError::KeyNotWrappable, Disposition::Caller),
            (RvError::MechanismParamInvalid, Disposition::Caller),
            (RvError::HostMemory, Disposition::Permanent),
        ];
        for (rv, want) in cases {
            let error = HsmError::pkcs11("m", CryptokiError::Pkcs11(rv, Function::Encrypt));
            assert_eq!(error.disposition(), want, "{rv:?}");
        }
        let pin = HsmError::pkcs11(
            "m",
            CryptokiError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert!(matches!(pin.failure, Failure::WrongPin));
        assert_eq!(
            pin.to_string(),
            "HSM member m: login failed: wrong PIN (CKR_PIN_INCORRECT)"
        );
    }

    #[test]
    fn gcm_tag_failure_is_only_a_suspect() {
        let decrypt = HsmError::pkcs11(
            "m",
            CryptokiError::Pkcs11(RvError::GeneralError, Function::Decrypt),
        );
        assert!(decrypt.may_be_bad_input());
        let encrypt = HsmError::pkcs11(
            "m",
            CryptokiError::Pkcs11(RvError::GeneralError, Function::Encrypt),
        );
        assert!(!encrypt.may_be_bad_input());
    }
}
