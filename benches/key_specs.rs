//! Benchmark of Sign and GenerateMac against the raw PKCS#11 call on the same SoftHSM2 token,
//! in one run: Sign with an ECC_NIST_P256 key (ECDSA_SHA_256) versus SHA-256 + `C_Sign`
//! (CKM_ECDSA), Sign with an RSA_2048 key (RSASSA_PKCS1_V1_5_SHA_256) versus SHA-256 +
//! `C_Sign` (CKM_RSA_PKCS over the DigestInfo), and GenerateMac with an HMAC_256 key versus
//! `C_Sign` (CKM_SHA256_HMAC). Issue 10's goal: each ratio >= 0.90. The key store's side
//! includes everything a call does (audit trail on, policy, state check, routing, DER).
//!
//! The two sides run in turns of short slices, so load from elsewhere hits both alike; each
//! figure is the median of the rounds; nothing is asserted (the machine is shared).
//!
//! Run: `cargo bench --bench key_specs` (`HSM_KMS_BENCH_SECS` sets the seconds per case and
//! round, default 2).

use std::error::Error;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use secrecy::SecretSlice;

use hsm_kms::cluster::Cluster;
use hsm_kms::config::{Config, MemberConfig};
use hsm_kms::keys::spec::Digest;
use hsm_kms::keystore::api::{CreateKeyRequest, GenerateMacRequest, SignRequest};
use hsm_kms::keystore::{Caller, KeyStore};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const ROUNDS: usize = 5;
const SLICE: Duration = Duration::from_millis(100);
const GOAL: f64 = 0.90;
const MESSAGE: &[u8] = b"a 48-byte message signed again and again in turn";

/// One side of a comparison.
#[derive(Clone, Copy)]
enum Side {
    Store,
    Raw,
}

/// A case: a key of the store and the raw call on the same token that it is compared with.
struct Case {
    label: &'static str,
    key_id: String,
    raw_key: ObjectHandle,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Ecdsa,
    RsaPkcs1,
    Hmac,
}

fn main() -> Res<()> {
    // SAFETY: first thing in `main`, before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        hsm_kms::hsm::prepare_switches(["SOFTHSM2_CONF"])
    };
    let seconds: f64 = match std::env::var("HSM_KMS_BENCH_SECS") {
        Ok(text) => text.parse()?,
        Err(_) => 2.0,
    };
    let duration = Duration::from_secs_f64(seconds);
    let dir = TempDir(std::env::temp_dir().join(format!("hsm-kms-bench-{}", uuid::Uuid::new_v4())));
    let config = make_cluster(&dir.0)?;
    drop(Cluster::init(
        &config.default_cluster,
        config.default_cluster()?,
    )?);
    let store = KeyStore::open(&config)?;
    let caller = Caller::local(store.scope());
    // Every member is tried in turn by the store; the raw side uses one, which holds every key.
    let member = &config.default_cluster()?.members[0];
    let session = open_session(member)?;
    let mut cases = Vec::new();
    for (label, spec, usage, kind) in [
        (
            "Sign ECC_NIST_P256 ECDSA_SHA_256",
            "ECC_NIST_P256",
            "SIGN_VERIFY",
            Kind::Ecdsa,
        ),
        (
            "Sign RSA_2048 RSASSA_PKCS1_V1_5_SHA_256",
            "RSA_2048",
            "SIGN_VERIFY",
            Kind::RsaPkcs1,
        ),
        (
            "GenerateMac HMAC_256",
            "HMAC_256",
            "GENERATE_VERIFY_MAC",
            Kind::Hmac,
        ),
    ] {
        let key = store
            .create_key(
                &caller,
                CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..Default::default()
                },
            )?
            .key_metadata;
        let class = match kind {
            Kind::Hmac => ObjectClass::SECRET_KEY,
            _ => ObjectClass::PRIVATE_KEY,
        };
        let cka_id = format!("{}/1", key.key_id).into_bytes();
        let raw_key = *session
            .find_objects(&[Attribute::Class(class), Attribute::Id(cka_id)])?
            .first()
            .ok_or("the key's object is not on the first member")?;
        cases.push(Case {
            label,
            key_id: key.key_id,
            raw_key,
            kind,
        });
    }
    println!(
        "Sign and GenerateMac vs the raw PKCS#11 call on the same SoftHSM2 token; {} CPU(s), load {} at start; {ROUNDS} rounds of {seconds} s per side",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
    );
    for case in &cases {
        let slices = (duration.as_secs_f64() / SLICE.as_secs_f64())
            .ceil()
            .max(1.0) as usize;
        let mut rates = [Vec::new(), Vec::new()];
        run(&store, &caller, &session, case, Side::Store, SLICE)?;
        run(&store, &caller, &session, case, Side::Raw, SLICE)?;
        for _ in 0..ROUNDS {
            let mut calls = [0u64; 2];
            let mut elapsed = [0f64; 2];
            for slice in 0..slices {
                for k in 0..2 {
                    let index = (k + slice) % 2;
                    let side = if index == 0 { Side::Store } else { Side::Raw };
                    let (n, seconds) = run(&store, &caller, &session, case, side, SLICE)?;
                    calls[index] += n;
                    elapsed[index] += seconds;
                }
            }
            for index in 0..2 {
                rates[index].push(calls[index] as f64 / elapsed[index]);
            }
        }
        let store_rate = median(&rates[0]);
        let raw_rate = median(&rates[1]);
        let ratio = store_rate / raw_rate;
        println!(
            "{:<42} store {store_rate:>8.0}/s  raw {raw_rate:>8.0}/s  ratio {ratio:.3} (goal >= {GOAL:.2}): {}",
            case.label,
            if ratio >= GOAL {
                "meets goal"
            } else {
                "BELOW goal"
            }
        );
    }
    store.shutdown();
    Ok(())
}

/// Calls `side` of `case` for `slice`; the number of calls and the seconds they took.
fn run(
    store: &KeyStore,
    caller: &Caller,
    session: &Session,
    case: &Case,
    side: Side,
    slice: Duration,
) -> Res<(u64, f64)> {
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < slice {
        match (side, case.kind) {
            (Side::Store, Kind::Hmac) => {
                black_box(store.generate_mac(
                    caller,
                    GenerateMacRequest {
                        message: SecretSlice::from(MESSAGE.to_vec()),
                        key_id: case.key_id.clone(),
                        mac_algorithm: "HMAC_SHA_256".into(),
                        ..Default::default()
                    },
                )?);
            }
            (Side::Store, kind) => {
                let algorithm = match kind {
                    Kind::Ecdsa => "ECDSA_SHA_256",
                    _ => "RSASSA_PKCS1_V1_5_SHA_256",
                };
                black_box(store.sign(
                    caller,
                    SignRequest {
                        key_id: case.key_id.clone(),
                        message: MESSAGE.to_vec(),
                        signing_algorithm: algorithm.into(),
                        ..Default::default()
                    },
                )?);
            }
            (Side::Raw, Kind::Hmac) => {
                black_box(session.sign(&Mechanism::Sha256Hmac, case.raw_key, MESSAGE)?);
            }
            (Side::Raw, Kind::Ecdsa) => {
                let digest = Digest::Sha256.hash(MESSAGE);
                black_box(session.sign(&Mechanism::Ecdsa, case.raw_key, &digest)?);
            }
            (Side::Raw, Kind::RsaPkcs1) => {
                let mut input = Digest::Sha256.digest_info_prefix().to_vec();
                input.extend(Digest::Sha256.hash(MESSAGE));
                black_box(session.sign(&Mechanism::RsaPkcs, case.raw_key, &input)?);
            }
        }
        calls += 1;
    }
    Ok((calls, started.elapsed().as_secs_f64()))
}

/// A logged-in session on `member`'s token (the key store has the module loaded already).
fn open_session(member: &MemberConfig) -> Res<Session> {
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

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn make_cluster(dir: &Path) -> Res<Config> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/softhsm-cluster.sh");
    let status = Command::new(&script)
        .arg(dir)
        .arg("2")
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("{} failed: {status}", script.display()).into());
    }
    Ok(Config::load(&dir.join("hsm-kms.toml"))?)
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
