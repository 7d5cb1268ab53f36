//! The trusted-key ceremonies: establishing one trusted AES key on several members so that
//! CMKs can be copied between them without ever existing outside an HSM: the cluster domain
//! key on every member of a cluster (`cluster init`), and the link key of two clusters on
//! every member of both (`cluster link`). Both are made and moved the same way.
//!
//! `CKA_TRUSTED` can only be set by a security officer, and an SO can create only public
//! objects, so the key is made and moved as public *session* objects and persisted by the
//! user:
//!
//! 1. each receiving member's SO generates an RSA-3072 transport key pair (session objects);
//! 2. the source member's SO imports each transport public key as a *trusted* session key and,
//!    when the source has no such key yet, generates it as a session object;
//! 3. the source's user (same session, after the SO logs out) wraps the key under each
//!    trusted transport key with RSA-OAEP (SHA-1/MGF1-SHA1: all SoftHSM2 2.6.1 accepts);
//! 4. each receiver's SO unwraps it into a trusted session object; its user copies that into a
//!    private, non-modifiable token object; all session objects are destroyed;
//! 5. only then does the source persist a freshly generated key.
//!
//! A failure before step 5 leaves no trusted key anywhere it was not before; the ceremony is
//! idempotent and is simply run again. The ceremony never logs or returns a PIN or key byte.

use std::sync::Arc;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;

use super::Member;
use super::error::{Failure, HsmError};
use super::templates::{self, TrustedKey};

fn oaep() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

/// A logged-out RW session on a member's token, for a ceremony.
struct CeremonySession<'a> {
    member: &'a Member,
    session: Session,
}

impl<'a> CeremonySession<'a> {
    fn open(member: &'a Member) -> Result<CeremonySession<'a>, HsmError> {
        let (pkcs11, slot): (Pkcs11, _) = member.open_slot()?;
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| HsmError::pkcs11(member.name(), e))?;
        Ok(CeremonySession { member, session })
    }

    fn error(&self, error: CryptokiError) -> HsmError {
        HsmError::pkcs11(self.member.name(), error)
    }

    fn pin(&self, user: UserType) -> Result<SecretString, HsmError> {
        let config = self.member.config();
        let reference = match user {
            UserType::So => config.so_pin.as_ref().ok_or_else(|| {
                HsmError::new(
                    self.member.name(),
                    Failure::PinUnavailable("no so_pin configured; ceremonies need it".into()),
                )
            })?,
            _ => &config.user_pin,
        };
        reference
            .resolve()
            .map_err(|e| HsmError::new(self.member.name(), Failure::PinUnavailable(e.to_string())))
    }

    fn login(&self, user: UserType) -> Result<(), HsmError> {
        let pin = self.pin(user)?;
        match self.session.login(user, Some(&pin)) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(error) => Err(self.error(error)),
        }
    }

    fn logout(&self) -> Result<(), HsmError> {
        self.session.logout().map_err(|e| self.error(e))
    }

    fn find_trusted_key(&self, key: &TrustedKey) -> Result<Option<ObjectHandle>, HsmError> {
        let found = self
            .session
            .find_objects(&templates::trusted_key_search(key))
            .map_err(|e| self.error(e))?;
        Ok(found
            .into_iter()
            .find(|handle| self.is_token_object(*handle)))
    }

    fn is_token_object(&self, handle: ObjectHandle) -> bool {
        matches!(
            self.session
                .get_attributes(handle, &[AttributeType::Token])
                .as_deref(),
            Ok([Attribute::Token(true)])
        )
    }

    fn destroy(&self, handle: ObjectHandle) {
        if let Err(error) = self.session.destroy_object(handle) {
            tracing::warn!(member = self.member.name(), %error, "could not destroy ceremony object");
        }
    }
}

/// Whether the member's user can see the domain key. The member must not be connected.
pub fn has_domain_key(member: &Member) -> Result<bool, HsmError> {
    has_trusted_key(member, &TrustedKey::domain())
}

/// Whether the member's user can see the trusted key `key`. The member must not be
/// connected.
pub fn has_trusted_key(member: &Member, key: &TrustedKey) -> Result<bool, HsmError> {
    let ceremony = CeremonySession::open(member)?;
    ceremony.login(UserType::User)?;
    let found = ceremony.find_trusted_key(key)?.is_some();
    ceremony.logout()?;
    Ok(found)
}

/// A receiving member with its SO logged in and its transport key pair generated.
struct Receiver<'a> {
    ceremony: CeremonySession<'a>,
    public: ObjectHandle,
    private: ObjectHandle,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

impl<'a> Receiver<'a> {
    fn prepare(member: &'a Member) -> Result<Receiver<'a>, HsmError> {
        let ceremony = CeremonySession::open(member)?;
        ceremony.login(UserType::So)?;
        let (public_template, private_template) = templates::transport_key_pair();
        let (public, private) = ceremony
            .session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|e| ceremony.error(e))?;
        let values = ceremony
            .session
            .get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| ceremony.error(e))?;
        let (mut modulus, mut exponent) = (Vec::new(), Vec::new());
        for value in values {
            match value {
                Attribute::Modulus(m) => modulus = m,
                Attribute::PublicExponent(e) => exponent = e,
                _ => {}
            }
        }
        Ok(Receiver {
            ceremony,
            public,
            private,
            modulus,
            exponent,
        })
    }

    /// Unwraps the trusted key as the SO, then persists it as the user.
    fn receive(self, key: &TrustedKey, wrapped: &[u8]) -> Result<(), HsmError> {
        let session = &self.ceremony.session;
        let transient = session
            .unwrap_key(
                &oaep(),
                self.private,
                wrapped,
                &templates::trusted_key_session(key),
            )
            .map_err(|e| self.ceremony.error(e))?;
        self.ceremony.destroy(self.private);
        self.ceremony.destroy(self.public);
        self.ceremony.logout()?;
        self.ceremony.login(UserType::User)?;
        let persisted = session
            .copy_object(transient, &templates::domain_key_persist())
            .map_err(|e| self.ceremony.error(e));
        self.ceremony.destroy(transient);
        persisted?;
        self.ceremony.logout()
    }
}

/// Gives every member in `receivers` the domain key held by `source`, or, when `source` has
/// none either, a fresh domain key generated inside `source`. No member may be connected.
pub fn distribute_domain_key(
    source: &Arc<Member>,
    receivers: &[Arc<Member>],
) -> Result<(), HsmError> {
    distribute_trusted_key(source, receivers, &TrustedKey::domain())
}

/// Gives every member in `receivers` the trusted key `key` held by `source`, or, when
/// `source` has none either, a fresh one generated inside `source`. No member may be
/// connected.
pub fn distribute_trusted_key(
    source: &Arc<Member>,
    receivers: &[Arc<Member>],
    key: &TrustedKey,
) -> Result<(), HsmError> {
    let prepared = receivers
        .iter()
        .map(|member| Receiver::prepare(member))
        .collect::<Result<Vec<_>, _>>()?;

    let ceremony = CeremonySession::open(source)?;
    ceremony.login(UserType::User)?;
    let existing = ceremony.find_trusted_key(key)?.is_some();
    ceremony.logout()?;

    ceremony.login(UserType::So)?;
    let mut transport_keys = Vec::new();
    for receiver in &prepared {
        let template = templates::trusted_transport_public_key(
            receiver.modulus.clone(),
            receiver.exponent.clone(),
        );
        transport_keys.push(
            ceremony
                .session
                .create_object(&template)
                .map_err(|e| ceremony.error(e))?,
        );
    }
    let fresh = match existing {
        true => None,
        false => Some(
            ceremony
                .session
                .generate_key(&Mechanism::AesKeyGen, &templates::trusted_key_generate(key))
                .map_err(|e| ceremony.error(e))?,
        ),
    };
    ceremony.logout()?;
    ceremony.login(UserType::User)?;

    // Logging out invalidated the handle of the persisted key: look it up again.
    let trusted_key = match fresh {
        Some(handle) => handle,
        None => ceremony
            .find_trusted_key(key)?
            .ok_or_else(|| HsmError::new(source.name(), Failure::DomainKeyMissing))?,
    };
    let mut wrapped = Vec::new();
    for transport in &transport_keys {
        wrapped.push(
            ceremony
                .session
                .wrap_key(&oaep(), *transport, trusted_key)
                .map_err(|e| ceremony.error(e))?,
        );
    }
    for transport in transport_keys {
        ceremony.destroy(transport);
    }
    for (receiver, wrapped) in prepared.into_iter().zip(&wrapped) {
        receiver.receive(key, wrapped)?;
    }
    if let Some(transient) = fresh {
        let persisted = ceremony
            .session
            .copy_object(transient, &templates::domain_key_persist())
            .map_err(|e| ceremony.error(e));
        ceremony.destroy(transient);
        persisted?;
    }
    ceremony.logout()
}
