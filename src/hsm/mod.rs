//! One HSM member = one PKCS#11 token: its module, an anchor session that holds the login, a
//! bounded session pool, a cache of key handles, health and background reconnection. This is
//! the only module that touches `cryptoki`. It never returns or logs key bytes or PINs:
//! plaintext key material never leaves the token, and what leaves it wrapped is wrapped under
//! the trusted domain key.

pub mod ceremony;
pub mod data_key_pair;
pub mod error;
pub mod gcm;
pub mod import;
mod inspect;
mod iv_pool;
pub mod material;
mod module;
mod pool;
mod signing;
pub mod templates;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError, Weak};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

pub use error::{Disposition, Failure, HsmError};
pub use gcm::{Gcm, GcmSeal, Sealed};
pub use inspect::{CheckValue, CheckValueMethod, ObjectInspection};
pub use material::{MaterialSpec, PublicKey};
pub use module::{prepare_environment, prepare_switches};
pub use templates::Portability;

use crate::config::MemberConfig;
use pool::Pool;

/// Pause before a probe looks for the domain key a second time (see [`Member::probe`]).
const PROBE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// A key object as listed on a member (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyObject {
    /// CKA_ID.
    pub id: Vec<u8>,
    /// CKA_LABEL.
    pub label: String,
    /// What the object holds, read from its attributes.
    pub material: MaterialSpec,
}

/// Security attributes of a key object, read back through PKCS#11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct KeyAttributes {
    /// `CKA_SENSITIVE`: the value can never be read in the clear.
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`: the key has been sensitive since it was made.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key may leave the token wrapped.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`: the key has never been extractable.
    pub never_extractable: bool,
    /// `CKA_WRAP_WITH_TRUSTED`: only a trusted key may wrap it.
    pub wrap_with_trusted: bool,
    /// `CKA_TRUSTED`: a wrapping key the security officer marked trusted.
    pub trusted: bool,
    /// `CKA_ENCRYPT`: the key may encrypt.
    pub encrypt: bool,
    /// `CKA_DECRYPT`: the key may decrypt.
    pub decrypt: bool,
    /// `CKA_SIGN`: the key may sign (or compute a MAC).
    pub sign: bool,
    /// `CKA_VERIFY`: the key may verify (or check a MAC).
    pub verify: bool,
    /// `CKA_DERIVE`: the key may derive others (ECDH).
    pub derive: bool,
    /// `CKA_WRAP`: the key may wrap others.
    pub wrap: bool,
    /// `CKA_UNWRAP`: the key may unwrap others.
    pub unwrap: bool,
    /// `CKA_TOKEN`: stored on the token, not only in the session.
    pub token: bool,
    /// `CKA_PRIVATE`: usable only after login.
    pub private: bool,
}

impl KeyAttributes {
    /// The attribute types these fields hold.
    pub const TYPES: [AttributeType; 15] = [
        AttributeType::Sensitive,
        AttributeType::AlwaysSensitive,
        AttributeType::Extractable,
        AttributeType::NeverExtractable,
        AttributeType::WrapWithTrusted,
        AttributeType::Trusted,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Sign,
        AttributeType::Verify,
        AttributeType::Derive,
        AttributeType::Wrap,
        AttributeType::Unwrap,
        AttributeType::Token,
        AttributeType::Private,
    ];

    /// Takes in one attribute read back; `false` for one that is not among [`Self::TYPES`].
    pub fn record(&mut self, attribute: &Attribute) -> bool {
        let field = match attribute {
            Attribute::Sensitive(v) => (&mut self.sensitive, *v),
            Attribute::AlwaysSensitive(v) => (&mut self.always_sensitive, *v),
            Attribute::Extractable(v) => (&mut self.extractable, *v),
            Attribute::NeverExtractable(v) => (&mut self.never_extractable, *v),
            Attribute::WrapWithTrusted(v) => (&mut self.wrap_with_trusted, *v),
            Attribute::Trusted(v) => (&mut self.trusted, *v),
            Attribute::Encrypt(v) => (&mut self.encrypt, *v),
            Attribute::Decrypt(v) => (&mut self.decrypt, *v),
            Attribute::Sign(v) => (&mut self.sign, *v),
            Attribute::Verify(v) => (&mut self.verify, *v),
            Attribute::Derive(v) => (&mut self.derive, *v),
            Attribute::Wrap(v) => (&mut self.wrap, *v),
            Attribute::Unwrap(v) => (&mut self.unwrap, *v),
            Attribute::Token(v) => (&mut self.token, *v),
            Attribute::Private(v) => (&mut self.private, *v),
            _ => return false,
        };
        *field.0 = field.1;
        true
    }
}

/// What a member needs of its domain key when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKey {
    /// Serving: the domain key must be there.
    Required,
    /// Ceremonies and vendor clusters: connect without it.
    Optional,
}

/// Told when a member goes down (with the cause) or comes back up (`None`).
pub type HealthListener = Arc<dyn Fn(&str, Option<&HsmError>) + Send + Sync>;

/// One HSM member of a cluster.
pub struct Member {
    config: MemberConfig,
    zone: String,
    session_bound: usize,
    reconnect_interval: Duration,
    domain_key: DomainKey,
    pkcs11: Mutex<Option<Pkcs11>>,
    connection: RwLock<Option<Connection>>,
    up: AtomicBool,
    reconnecting: AtomicBool,
    last_failure: Mutex<Option<HsmError>>,
    health_listener: std::sync::OnceLock<HealthListener>,
    /// Calls running on the member now (for least-busy routing).
    in_flight: std::sync::atomic::AtomicUsize,
    /// Writers of token objects (generate, unwrap, destroy) hold it exclusively, searches
    /// shared. SoftHSM2 keeps a token's objects in one file each and re-reads the directory on
    /// a search; a search or a second writer meeting a half-written object file in the same
    /// process fails in ways that look like a broken token (CKR_GENERAL_ERROR from
    /// C_GenerateKey, CKR_TEMPLATE_INCONSISTENT, a search finding nothing, a failed destroy),
    /// all seen under CI load. Crypto on a known handle does not need it.
    token_objects: RwLock<()>,
}

/// A logged-in connection to the token; replaced wholesale on reconnect.
struct Connection {
    pkcs11: Pkcs11,
    slot: Slot,
    /// Holds the login for every session of this application on the token.
    _anchor: Mutex<Session>,
    pool: Pool,
    domain_key: Option<ObjectHandle>,
    handles: RwLock<HashMap<Vec<u8>, ObjectHandle>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.config.name)
            .field("zone", &self.zone)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member, not yet connected.
    pub fn new(
        config: MemberConfig,
        zone: String,
        session_bound: usize,
        reconnect_interval: Duration,
        domain_key: DomainKey,
    ) -> Arc<Member> {
        Arc::new(Member {
            config,
            zone,
            session_bound,
            reconnect_interval,
            domain_key,
            pkcs11: Mutex::new(None),
            connection: RwLock::new(None),
            up: AtomicBool::new(false),
            reconnecting: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            health_listener: std::sync::OnceLock::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            token_objects: RwLock::new(()),
        })
    }

    /// Sets the listener told about this member going down and coming back (once).
    pub fn set_health_listener(&self, listener: HealthListener) {
        let _ = self.health_listener.set(listener);
    }

    fn tell(&self, cause: Option<&HsmError>) {
        if let Some(listener) = self.health_listener.get() {
            listener(self.name(), cause);
        }
    }

    /// The member's name from the config.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The member's availability zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Calls running on the member right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the member is connected and believed healthy.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The failure that took the member down (or kept it from connecting), if any.
    pub fn last_failure(&self) -> Option<HsmError> {
        lock(&self.last_failure).clone()
    }

    fn fail(&self, failure: Failure) -> HsmError {
        HsmError::new(self.name(), failure)
    }

    fn pkcs11_error(&self) -> impl Fn(cryptoki::error::Error) -> HsmError + '_ {
        move |error| HsmError::pkcs11(self.name(), error)
    }

    /// The member's module, loaded once per process.
    pub(crate) fn module(&self) -> Result<Pkcs11, HsmError> {
        let mut loaded = lock(&self.pkcs11);
        if let Some(pkcs11) = loaded.as_ref() {
            return Ok(pkcs11.clone());
        }
        let pkcs11 = module::load(self.name(), &self.config.module)?;
        *loaded = Some(pkcs11.clone());
        Ok(pkcs11)
    }

    /// Initialises the module (if needed) and finds the member's slot, without logging in.
    pub(crate) fn open_slot(&self) -> Result<(Pkcs11, Slot), HsmError> {
        let pkcs11 = self.module()?;
        module::initialize(self.name(), &pkcs11, &self.config.env)?;
        let slot = module::find_slot(self.name(), &pkcs11, &self.config.token)?;
        Ok((pkcs11, slot))
    }

    pub(crate) fn config(&self) -> &MemberConfig {
        &self.config
    }

    /// Connects and logs in; with [`DomainKey::Required`] the domain key must be present.
    pub fn connect(&self) -> Result<(), HsmError> {
        let result = self.open_connection();
        match result {
            Ok(connection) => {
                *write(&self.connection) = Some(connection);
                *lock(&self.last_failure) = None;
                self.up.store(true, Ordering::Release);
                Ok(())
            }
            Err(error) => {
                *lock(&self.last_failure) = Some(error.clone());
                Err(error)
            }
        }
    }

    fn open_connection(&self) -> Result<Connection, HsmError> {
        let (pkcs11, slot) = self.open_slot()?;
        let pin = self
            .config
            .user_pin
            .resolve()
            .map_err(|error| self.fail(Failure::PinUnavailable(error.to_string())))?;
        let anchor = pkcs11.open_rw_session(slot).map_err(self.pkcs11_error())?;
        match anchor.login(UserType::User, Some(&pin)) {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(error) => return Err(self.pkcs11_error()(error)),
        }
        let found = self.search(&anchor, &templates::domain_key_search())?;
        let domain_key = found.first().copied();
        if domain_key.is_none() && self.domain_key == DomainKey::Required {
            return Err(self.fail(Failure::DomainKeyMissing));
        }
        Ok(Connection {
            pkcs11,
            slot,
            _anchor: Mutex::new(anchor),
            pool: Pool::new(self.session_bound),
            domain_key,
            handles: RwLock::new(HashMap::new()),
        })
    }

    /// Runs `operation` on a pooled session; on failure, decides whether the member is down.
    fn with_session<T>(
        self: &Arc<Self>,
        operation: impl FnOnce(&Connection, &Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        if !self.is_up() {
            return Err(self.fail(Failure::Down));
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = (|| {
            let guard = match self.connection.try_read() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => return Err(self.fail(Failure::Down)),
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            let connection = guard.as_ref().ok_or_else(|| self.fail(Failure::Down))?;
            let session =
                connection
                    .pool
                    .acquire(self.name(), &connection.pkcs11, connection.slot)?;
            let result = operation(connection, &session);
            let reusable =
                !matches!(&result, Err(error) if error.disposition() == Disposition::Unavailable);
            connection.pool.release(session, reusable);
            result
        })();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Err(error) = &result {
            self.observe(error);
        }
        result
    }

    /// Reacts to a failed call: an unavailable member is marked down; a missing object or a
    /// suspicious GCM failure makes us probe, since a broken token finds nothing.
    ///
    /// Out of sessions ([`Failure::Busy`]) says nothing about the token's health, and a probe
    /// would wait for the same exhausted pool: a busy member is never taken for down (that
    /// would finalize its module and fail every call in flight on it).
    fn observe(self: &Arc<Self>, error: &HsmError) {
        if matches!(error.failure, Failure::Busy) {
            return;
        }
        match error.disposition() {
            Disposition::Unavailable if !error.may_be_bad_input() => self.mark_down(error.clone()),
            Disposition::Unavailable | Disposition::RetryElsewhere => match self.probe() {
                Err(probe) if !matches!(probe.failure, Failure::Busy) => self.mark_down(probe),
                _ => {}
            },
            Disposition::Caller | Disposition::Permanent => {}
        }
    }

    /// Checks that the token still answers and still holds the domain key.
    pub fn probe(self: &Arc<Self>) -> Result<(), HsmError> {
        if !self.is_up() {
            return Err(self
                .last_failure()
                .unwrap_or_else(|| self.fail(Failure::Down)));
        }
        let guard = match self.connection.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return Err(self.fail(Failure::Down)),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let connection = guard.as_ref().ok_or_else(|| self.fail(Failure::Down))?;
        let session = connection
            .pool
            .acquire(self.name(), &connection.pkcs11, connection.slot)?;
        let mut found = self.search(&session, &templates::domain_key_search());
        if matches!(&found, Ok(objects) if objects.is_empty()) {
            // A token that went away answers nothing; so, rarely, does a token another process
            // writes to. One more look after a pause tells the two apart before the member is
            // called down.
            std::thread::sleep(PROBE_RECHECK);
            found = self.search(&session, &templates::domain_key_search());
        }
        let result = match found {
            Ok(found) if !found.is_empty() => Ok(()),
            Ok(_) if self.domain_key == DomainKey::Optional => connection
                .pkcs11
                .get_token_info(connection.slot)
                .map(|_| ())
                .map_err(self.pkcs11_error()),
            Ok(_) => Err(self.fail(Failure::DomainKeyMissing)),
            Err(error) => Err(error),
        };
        connection.pool.release(session, result.is_ok());
        result
    }

    /// Marks the member down when a failed probe says it is unreachable or broken.
    fn down_if_unavailable(self: &Arc<Self>, error: &HsmError) {
        if error.disposition() == Disposition::Unavailable && self.is_up() {
            self.mark_down(error.clone());
        }
    }

    /// Marks the member down and starts reconnecting it in the background.
    pub fn mark_down(self: &Arc<Self>, cause: HsmError) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(member = self.name(), error = %cause, "HSM member down");
            self.tell(Some(&cause));
        }
        *lock(&self.last_failure) = Some(cause);
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let member: Weak<Member> = Arc::downgrade(self);
        let interval = self.reconnect_interval;
        let spawned = std::thread::Builder::new()
            .name(format!("reconnect-{}", self.name()))
            .spawn(move || reconnect_loop(member, interval));
        if let Err(error) = spawned {
            tracing::error!(member = self.name(), %error, "cannot start reconnect thread");
            self.reconnecting.store(false, Ordering::Release);
        }
    }

    /// Finalizes and re-initialises the module, then logs in again.
    fn reconnect(&self) -> Result<(), HsmError> {
        {
            let mut connection = write(&self.connection);
            *connection = None;
            if let Ok(pkcs11) = self.module() {
                module::finalize(&pkcs11);
            }
        }
        self.connect()
    }

    /// Searches the token's objects, never while this process writes one (see
    /// `token_objects`).
    fn search(
        &self,
        session: &Session,
        template: &[Attribute],
    ) -> Result<Vec<ObjectHandle>, HsmError> {
        let _searching = read(&self.token_objects);
        session.find_objects(template).map_err(self.pkcs11_error())
    }

    /// Looks up (and caches) the handle of the key object with `id`.
    fn key_handle(
        &self,
        connection: &Connection,
        session: &Session,
        id: &[u8],
    ) -> Result<ObjectHandle, HsmError> {
        if let Some(handle) = read(&connection.handles).get(id) {
            return Ok(*handle);
        }
        let mut found = Vec::new();
        for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
            found = self.search(
                session,
                &[Attribute::Class(class), Attribute::Id(id.to_vec())],
            )?;
            if !found.is_empty() {
                break;
            }
        }
        match found.as_slice() {
            [handle] => {
                write(&connection.handles).insert(id.to_vec(), *handle);
                Ok(*handle)
            }
            [] => Err(self.fail(Failure::KeyMissing(hex::encode(id)))),
            _ => Err(self.fail(Failure::Other(format!(
                "{} key objects share CKA_ID {}",
                found.len(),
                hex::encode(id)
            )))),
        }
    }

    /// Drops a cached handle after the HSM called it invalid.
    fn forget_handle<T>(
        &self,
        connection: &Connection,
        id: &[u8],
        result: Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        if let Err(HsmError {
            failure:
                Failure::Pkcs11 {
                    rv:
                        cryptoki::error::RvError::KeyHandleInvalid
                        | cryptoki::error::RvError::ObjectHandleInvalid,
                    ..
                },
            ..
        }) = &result
        {
            write(&connection.handles).remove(id);
        }
        result
    }

    fn domain_key(&self, connection: &Connection) -> Result<ObjectHandle, HsmError> {
        connection
            .domain_key
            .ok_or_else(|| self.fail(Failure::DomainKeyMissing))
    }

    /// AES-256-GCM encryption inside the HSM. Offers a fresh random IV, then reads the IV
    /// buffer back after `C_Encrypt`: an HSM that chooses its own IV (CloudHSM) wrote it
    /// there, and [`Sealed`] carries the IV the ciphertext really needs.
    pub fn encrypt(
        self: &Arc<Self>,
        key_id: &[u8],
        seal: &GcmSeal<'_>,
        plaintext: &[u8],
    ) -> Result<Sealed, HsmError> {
        self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            let mut iv = iv_pool::proposed_iv().map_err(|failure| self.fail(failure))?;
            let params =
                GcmParams::new(&mut iv, seal.aad, 128.into()).map_err(self.pkcs11_error())?;
            let encrypted = session.encrypt(&Mechanism::AesGcm(params), key, plaintext);
            let result = encrypted
                .map(|ciphertext_and_tag| Sealed::new(iv, ciphertext_and_tag))
                .map_err(self.pkcs11_error());
            self.forget_handle(connection, key_id, result)
        })
    }

    /// AES-256-GCM decryption inside the HSM of ciphertext || tag. A rejected tag is reported as
    /// [`Failure::Rejected`] only after the member proved healthy.
    pub fn decrypt(
        self: &Arc<Self>,
        key_id: &[u8],
        gcm: &Gcm<'_>,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if ciphertext.len() < gcm::TAG_LEN {
            return Err(self.fail(Failure::InvalidInput("ciphertext shorter than the GCM tag")));
        }
        let result = self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            let mut iv = gcm.iv;
            let params =
                GcmParams::new(&mut iv, gcm.aad, 128.into()).map_err(self.pkcs11_error())?;
            let result = session
                .decrypt(&Mechanism::AesGcm(params), key, ciphertext)
                .map(Zeroizing::new)
                .map_err(self.pkcs11_error());
            self.forget_handle(connection, key_id, result)
        });
        match result {
            Err(error) if error.may_be_bad_input() && self.is_up() => {
                Err(self.fail(Failure::Rejected))
            }
            other => other,
        }
    }

    /// Random bytes from the HSM's generator.
    pub fn random(self: &Arc<Self>, length: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let length = u32::try_from(length)
            .map_err(|_| self.fail(Failure::InvalidInput("random length too large")))?;
        self.with_session(|_, session| {
            session
                .generate_random_vec(length)
                .map(Zeroizing::new)
                .map_err(self.pkcs11_error())
        })
    }

    /// Generates a material version of kind `material` inside this HSM: a secret, or a key
    /// pair under one `CKA_ID`.
    pub fn generate_key(
        self: &Arc<Self>,
        key_id: &[u8],
        label: &str,
        material: MaterialSpec,
        portability: Portability,
    ) -> Result<(), HsmError> {
        self.with_session(|connection, session| {
            let _writing = write(&self.token_objects);
            let handle = match material.secret_generation(key_id, label, portability) {
                Some((mechanism, template)) => session.generate_key(&mechanism, &template),
                None => {
                    let Some((mechanism, public, private)) =
                        material.pair_generation(key_id, label, portability)
                    else {
                        return Err(
                            self.fail(Failure::InvalidInput("no generation for the key spec"))
                        );
                    };
                    session
                        .generate_key_pair(&mechanism, &public, &private)
                        .map(|(_, private)| private)
                }
            }
            .map_err(self.pkcs11_error())?;
            write(&connection.handles).insert(key_id.to_vec(), handle);
            Ok(())
        })
    }

    /// Wraps a CMK under the domain key (AES key wrap with padding), inside the HSM.
    pub fn wrap_key(self: &Arc<Self>, key_id: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.wrap_under(key_id, None)
    }

    /// Wraps a CMK under the link key `link_id` (AES key wrap with padding), inside the HSM,
    /// for a member of the linked cluster.
    pub fn wrap_key_for_link(
        self: &Arc<Self>,
        key_id: &[u8],
        link_id: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.wrap_under(key_id, Some(link_id))
    }

    /// The trusted key a CMK travels under: the domain key, or the link key `link`.
    fn wrapping_key(
        &self,
        connection: &Connection,
        session: &Session,
        link: Option<&[u8]>,
    ) -> Result<ObjectHandle, HsmError> {
        match link {
            None => self.domain_key(connection),
            Some(link_id) => self.key_handle(connection, session, link_id),
        }
    }

    fn wrap_under(
        self: &Arc<Self>,
        key_id: &[u8],
        link: Option<&[u8]>,
    ) -> Result<Vec<u8>, HsmError> {
        self.with_session(|connection, session| {
            let key = self.key_handle(connection, session, key_id)?;
            let wrapping = self.wrapping_key(connection, session, link)?;
            let result = session
                .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key)
                .map_err(self.pkcs11_error());
            self.forget_handle(connection, key_id, result)
        })
    }

    /// Unwraps a material version wrapped by another member under the domain key, inside
    /// this HSM; a pair's public key, which is not secret, is created from `public`.
    pub fn unwrap_key(
        self: &Arc<Self>,
        key_id: &[u8],
        label: &str,
        material: MaterialSpec,
        wrapped: &[u8],
        public: Option<&PublicKey>,
    ) -> Result<(), HsmError> {
        self.unwrap_under(None, key_id, label, material, wrapped, public)
    }

    /// [`Member::unwrap_key`] for material a member of a linked cluster wrapped under the
    /// link key `link_id`.
    pub fn unwrap_key_from_link(
        self: &Arc<Self>,
        link_id: &[u8],
        key_id: &[u8],
        label: &str,
        material: MaterialSpec,
        wrapped: &[u8],
        public: Option<&PublicKey>,
    ) -> Result<(), HsmError> {
        self.unwrap_under(Some(link_id), key_id, label, material, wrapped, public)
    }

    fn unwrap_under(
        self: &Arc<Self>,
        link: Option<&[u8]>,
        key_id: &[u8],
        label: &str,
        material: MaterialSpec,
        wrapped: &[u8],
        public: Option<&PublicKey>,
    ) -> Result<(), HsmError> {
        self.with_session(|connection, session| {
            let wrapping = self.wrapping_key(connection, session, link)?;
            let _writing = write(&self.token_objects);
            let template = material.secret_template(key_id, label, Portability::WrapWithTrusted);
            let handle = session
                .unwrap_key(&Mechanism::AesKeyWrapPad, wrapping, wrapped, &template)
                .map_err(self.pkcs11_error())?;
            write(&connection.handles).insert(key_id.to_vec(), handle);
            if let Some(public) = public {
                session
                    .create_object(&material.public_object(key_id, label, public))
                    .map_err(self.pkcs11_error())?;
            }
            Ok(())
        })
    }

    /// The clusters this member shares a link key with, as pairs of cluster names (from the
    /// link keys' `CKA_ID`s).
    pub fn links(self: &Arc<Self>) -> Result<Vec<(String, String)>, HsmError> {
        self.with_session(|_, session| {
            let _searching = read(&self.token_objects);
            let handles = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(true),
                ])
                .map_err(self.pkcs11_error())?;
            let mut links = Vec::new();
            for handle in handles {
                let attributes = session
                    .get_attributes(handle, &[AttributeType::Id])
                    .map_err(self.pkcs11_error())?;
                for attribute in attributes {
                    if let Attribute::Id(id) = attribute
                        && let Some(pair) = templates::TrustedKey::linked_clusters(&id)
                    {
                        links.push(pair);
                    }
                }
            }
            links.sort();
            Ok(links)
        })
    }

    /// Whether a key object with `id` is on the member, without searching the token when
    /// this connection made, copied or used it (its handle is cached; destroying the object
    /// drops it): else as [`Member::has_key`] finds. A caller that then uses the key learns
    /// of an object removed behind its back from the call's failure.
    pub fn holds_key(self: &Arc<Self>, key_id: &[u8]) -> Result<bool, HsmError> {
        let cached = match self.connection.try_read() {
            Ok(guard) => guard
                .as_ref()
                .is_some_and(|connection| read(&connection.handles).contains_key(key_id)),
            Err(_) => false,
        };
        if cached && self.is_up() {
            return Ok(true);
        }
        self.has_key(key_id)
    }

    /// Whether a key object with `id` is on the member. A healthy "no" is checked by a probe:
    /// a broken token also finds nothing.
    pub fn has_key(self: &Arc<Self>, key_id: &[u8]) -> Result<bool, HsmError> {
        let found = self.with_session(|_, session| {
            let mut found = Vec::new();
            for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
                found.extend(self.search(
                    session,
                    &[Attribute::Class(class), Attribute::Id(key_id.to_vec())],
                )?);
            }
            Ok(found)
        })?;
        if found.is_empty() {
            self.probe()
                .inspect_err(|error| self.down_if_unavailable(error))?;
        }
        Ok(!found.is_empty())
    }

    /// Destroys every object with `id` and verifies it is gone.
    pub fn destroy_key(self: &Arc<Self>, key_id: &[u8]) -> Result<(), HsmError> {
        self.with_session(|connection, session| {
            // Every object under the id: a secret, or both halves of a pair.
            let template = [Attribute::Id(key_id.to_vec())];
            let _writing = write(&self.token_objects);
            let found = session
                .find_objects(&template)
                .map_err(self.pkcs11_error())?;
            write(&connection.handles).remove(key_id);
            write(&connection.handles).remove(&signing::public_cache_key(key_id));
            for handle in found {
                session
                    .destroy_object(handle)
                    .map_err(self.pkcs11_error())?;
            }
            Ok(())
        })?;
        if self.has_key(key_id)? {
            return Err(self.fail(Failure::Other(format!(
                "key object {} still present after destroy",
                hex::encode(key_id)
            ))));
        }
        Ok(())
    }

    /// Lists the key material objects on the member (secrets and private keys hsm-kms can
    /// describe), the domain key and link keys excluded.
    pub fn list_keys(self: &Arc<Self>) -> Result<Vec<KeyObject>, HsmError> {
        let objects = self.with_session(|_, session| {
            let _searching = read(&self.token_objects);
            let mut handles = Vec::new();
            for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
                handles.extend(
                    session
                        .find_objects(&[Attribute::Class(class), Attribute::Token(true)])
                        .map_err(self.pkcs11_error())?,
                );
            }
            let mut objects = Vec::with_capacity(handles.len());
            for handle in handles {
                let mut wanted = vec![AttributeType::Id, AttributeType::Label];
                wanted.extend(MaterialSpec::DESCRIBING);
                let attributes = session
                    .get_attributes(handle, &wanted)
                    .map_err(self.pkcs11_error())?;
                let Some(material) = MaterialSpec::of_object(&attributes) else {
                    continue;
                };
                let mut object = KeyObject {
                    id: Vec::new(),
                    label: String::new(),
                    material,
                };
                for attribute in attributes {
                    match attribute {
                        Attribute::Id(id) => object.id = id,
                        Attribute::Label(label) => {
                            object.label = String::from_utf8_lossy(&label).into_owned()
                        }
                        _ => {}
                    }
                }
                if !templates::is_trusted_key_id(&object.id) {
                    objects.push(object);
                }
            }
            Ok(objects)
        })?;
        self.probe()
            .inspect_err(|error| self.down_if_unavailable(error))?;
        Ok(objects)
    }

    /// Reads the security attributes of the key object with `id` (the domain key included).
    pub fn key_attributes(self: &Arc<Self>, key_id: &[u8]) -> Result<KeyAttributes, HsmError> {
        self.with_session(|connection, session| {
            let handle = self.key_handle(connection, session, key_id)?;
            let values = session
                .get_attributes(handle, &KeyAttributes::TYPES)
                .map_err(self.pkcs11_error())?;
            let mut attributes = KeyAttributes::default();
            for value in &values {
                attributes.record(value);
            }
            Ok(attributes)
        })
    }
}

fn reconnect_loop(member: Weak<Member>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(member) = member.upgrade() else {
            return;
        };
        match member.reconnect() {
            Ok(()) => {
                member.reconnecting.store(false, Ordering::Release);
                tracing::info!(member = member.name(), "HSM member reconnected");
                member.tell(None);
                return;
            }
            Err(error) => tracing::debug!(member = member.name(), %error, "reconnect failed"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member that is never connected (its module does not exist).
    fn unconnected_member() -> Arc<Member> {
        let config = crate::config::Config::parse(
            r#"
default_cluster = "main"
[service]
region = "us-east-1"
account_id = "111122223333"
data_dir = "data"

[clusters.main]
replication = "vendor"
hsms = [{ name = "h1", address = "10.0.0.1:2223", zone = "a" }]

[clusters.main.slot]
name = "slot"
module = "/nonexistent/pkcs11.so"
token = "t"
user_pin = "env:PIN"
"#,
        )
        .unwrap();
        let slot = config.default_cluster().unwrap().slot.clone().unwrap();
        Member::new(
            slot,
            "a".into(),
            1,
            Duration::from_secs(3600),
            DomainKey::Optional,
        )
    }

    #[test]
    fn a_busy_member_is_not_taken_for_down() {
        let member = unconnected_member();
        member.up.store(true, Ordering::Release);
        member.observe(&HsmError::new("slot", Failure::Busy));
        assert!(member.is_up(), "out of sessions is no failure of the token");
        member.observe(&HsmError::new("slot", Failure::KeyMissing("6b".into())));
        assert!(
            !member.is_up(),
            "a missing key is probed, and the probe failed"
        );
    }
}
