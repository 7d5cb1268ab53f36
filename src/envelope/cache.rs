//! The data-key cache: a caching materials manager over a thread-safe, capacity-bounded LRU
//! cache of materials, with the AWS Encryption SDK's security thresholds (max age, and per
//! data key max messages and max bytes encrypted) and cache ids derived as its
//! specification does (SHA-512 over the partition, suite and encryption context; for
//! decryption also the encrypted data keys). An entry's data key is zeroized when the entry
//! is evicted or dropped and no message still uses it. It never caches materials for a
//! message whose length is unknown or larger than max bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha512};

use super::EnvelopeError;
use super::format::{self, EncryptedDataKey, EncryptionContext};
use super::materials::{
    DecryptionMaterials, DecryptionRequest, EncryptionMaterials, EncryptionRequest,
    MaterialsManager,
};

/// A cache id: a SHA-512 digest.
type CacheId = [u8; 64];

/// The thresholds after which a cached data key is no longer used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// An entry older than this is not used.
    pub max_age: Duration,
    /// A data key encrypts at most this many messages.
    pub max_messages: u64,
    /// A data key encrypts at most this many plaintext bytes in total.
    pub max_bytes: u64,
}

impl CacheLimits {
    /// Max age as given; messages 2^32 and bytes 2^63 - 1, the SDK's defaults.
    pub fn with_max_age(max_age: Duration) -> CacheLimits {
        CacheLimits {
            max_age,
            max_messages: 1 << 32,
            max_bytes: i64::MAX as u64,
        }
    }
}

/// How the cache was used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStatistics {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that went to the keyring.
    pub misses: u64,
    /// Entries removed: over capacity, too old, or used up.
    pub evictions: u64,
}

enum Materials {
    Encryption(Arc<EncryptionMaterials>),
    Decryption(Arc<DecryptionMaterials>),
}

struct Entry {
    materials: Materials,
    created: Instant,
    messages: u64,
    bytes: u64,
    last_used: u64,
}

struct Entries {
    map: HashMap<CacheId, Entry>,
    clock: u64,
}

/// A bounded, thread-safe cache of materials; one can serve a whole service.
pub struct MaterialsCache {
    capacity: usize,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl MaterialsCache {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> MaterialsCache {
        MaterialsCache {
            capacity: capacity.max(1),
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                clock: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Hits, misses and evictions so far.
    pub fn statistics(&self) -> CacheStatistics {
        CacheStatistics {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves only counters behind: keep serving.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Encryption materials for one more message of `bytes`, if an entry allows it.
    fn use_for_encryption(
        &self,
        id: &CacheId,
        bytes: u64,
        limits: &CacheLimits,
    ) -> Option<Arc<EncryptionMaterials>> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.map.get_mut(id)?;
        entry.messages += 1;
        entry.bytes = entry.bytes.saturating_add(bytes);
        let usable = entry.created.elapsed() <= limits.max_age
            && entry.messages <= limits.max_messages
            && entry.bytes <= limits.max_bytes;
        match (&entry.materials, usable) {
            (Materials::Encryption(materials), true) => {
                entry.last_used = now;
                Some(Arc::clone(materials))
            }
            _ => {
                entries.map.remove(id);
                self.count(&self.evictions);
                None
            }
        }
    }

    /// Decryption materials cached under `id`, if not too old.
    fn use_for_decryption(
        &self,
        id: &CacheId,
        limits: &CacheLimits,
    ) -> Option<Arc<DecryptionMaterials>> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.map.get_mut(id)?;
        match (&entry.materials, entry.created.elapsed() <= limits.max_age) {
            (Materials::Decryption(materials), true) => {
                entry.last_used = now;
                Some(Arc::clone(materials))
            }
            _ => {
                entries.map.remove(id);
                self.count(&self.evictions);
                None
            }
        }
    }

    /// Stores an entry, evicting the least recently used one when full.
    fn put(&self, id: CacheId, materials: Materials, bytes: u64) {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        if !entries.map.contains_key(&id) && entries.map.len() >= self.capacity {
            let oldest = entries
                .map
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                entries.map.remove(&oldest);
                self.count(&self.evictions);
            }
        }
        let messages = u64::from(matches!(materials, Materials::Encryption(_)));
        entries.map.insert(
            id,
            Entry {
                materials,
                created: Instant::now(),
                messages,
                bytes,
                last_used: now,
            },
        );
    }
}

/// A materials manager that reuses data keys from a [`MaterialsCache`] within limits.
pub struct CachingMaterialsManager {
    inner: Arc<dyn MaterialsManager>,
    cache: Arc<MaterialsCache>,
    limits: CacheLimits,
    partition: [u8; 64],
    /// Encryption cache ids already derived, by suite and context: two SHA-512 passes
    /// cost more than the rest of a cached lookup.
    encryption_ids: Mutex<HashMap<EncryptionContext, [Option<CacheId>; 2]>>,
}

/// Most encryption cache ids remembered; the memo starts over when full.
const MAX_REMEMBERED_IDS: usize = 256;

impl CachingMaterialsManager {
    /// Caches what `inner` produces in `cache`, within `limits`. Managers sharing a cache
    /// but not a key set must be given distinct `partition` names; `None` makes a fresh
    /// random partition, as the SDK does.
    pub fn new(
        inner: Arc<dyn MaterialsManager>,
        cache: Arc<MaterialsCache>,
        limits: CacheLimits,
        partition: Option<&str>,
    ) -> Result<CachingMaterialsManager, EnvelopeError> {
        if limits.max_messages == 0 || limits.max_messages > 1 << 32 {
            return Err(EnvelopeError::InvalidInput(
                "max messages must be between 1 and 2^32".to_owned(),
            ));
        }
        if limits.max_bytes > i64::MAX as u64 {
            return Err(EnvelopeError::InvalidInput(
                "max bytes must be at most 2^63 - 1".to_owned(),
            ));
        }
        let name = match partition {
            Some(name) => name.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        Ok(CachingMaterialsManager {
            inner,
            cache,
            limits,
            partition: Sha512::digest(name.as_bytes()).into(),
            encryption_ids: Mutex::new(HashMap::new()),
        })
    }

    /// The cache this manager uses.
    pub fn cache(&self) -> &Arc<MaterialsCache> {
        &self.cache
    }

    /// The encryption cache id of the request, remembered per suite and context.
    fn encryption_id(&self, request: &EncryptionRequest<'_>) -> Result<CacheId, EnvelopeError> {
        let slot = usize::from(request.suite.is_signed());
        let mut memo = self
            .encryption_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = memo.get(request.context).and_then(|ids| ids[slot]) {
            return Ok(id);
        }
        let id = self.derive_encryption_id(request)?;
        if memo.len() >= MAX_REMEMBERED_IDS {
            memo.clear();
        }
        memo.entry(request.context.clone()).or_default()[slot] = Some(id);
        Ok(id)
    }

    /// SHA-512 over the partition's digest, the suite and the context's digest.
    fn derive_encryption_id(
        &self,
        request: &EncryptionRequest<'_>,
    ) -> Result<CacheId, EnvelopeError> {
        let mut hash = Sha512::new();
        hash.update(self.partition);
        hash.update([1u8]);
        hash.update(request.suite.id().to_be_bytes());
        hash.update(Sha512::digest(format::encode_context(request.context)?));
        Ok(hash.finalize().into())
    }

    fn decryption_id(&self, request: &DecryptionRequest<'_>) -> Result<CacheId, EnvelopeError> {
        let mut digests: Vec<[u8; 64]> =
            request.encrypted_data_keys.iter().map(edk_digest).collect();
        digests.sort_unstable();
        let mut hash = Sha512::new();
        hash.update(self.partition);
        hash.update(request.suite.id().to_be_bytes());
        for digest in &digests {
            hash.update(digest);
        }
        hash.update([0u8; 64]);
        hash.update(Sha512::digest(format::encode_context(request.context)?));
        Ok(hash.finalize().into())
    }
}

/// SHA-512 of one encrypted data key's serialization.
fn edk_digest(key: &EncryptedDataKey) -> [u8; 64] {
    let mut hash = Sha512::new();
    for field in [
        key.provider_id.as_bytes(),
        key.provider_info.as_slice(),
        key.ciphertext.as_slice(),
    ] {
        hash.update((field.len() as u16).to_be_bytes());
        hash.update(field);
    }
    hash.finalize().into()
}

impl MaterialsManager for CachingMaterialsManager {
    fn encryption_materials(
        &self,
        request: &EncryptionRequest<'_>,
    ) -> Result<Arc<EncryptionMaterials>, EnvelopeError> {
        let Some(length) = request
            .plaintext_length
            .filter(|length| *length <= self.limits.max_bytes)
        else {
            return self.inner.encryption_materials(request);
        };
        let id = self.encryption_id(request)?;
        if let Some(materials) = self.cache.use_for_encryption(&id, length, &self.limits) {
            self.cache.count(&self.cache.hits);
            return Ok(materials);
        }
        self.cache.count(&self.cache.misses);
        let materials = self.inner.encryption_materials(request)?;
        self.cache
            .put(id, Materials::Encryption(Arc::clone(&materials)), length);
        Ok(materials)
    }

    fn decryption_materials(
        &self,
        request: &DecryptionRequest<'_>,
    ) -> Result<Arc<DecryptionMaterials>, EnvelopeError> {
        let id = self.decryption_id(request)?;
        if let Some(materials) = self.cache.use_for_decryption(&id, &self.limits) {
            self.cache.count(&self.cache.hits);
            return Ok(materials);
        }
        self.cache.count(&self.cache.misses);
        let materials = self.inner.decryption_materials(request)?;
        self.cache
            .put(id, Materials::Decryption(Arc::clone(&materials)), 0);
        Ok(materials)
    }
}
