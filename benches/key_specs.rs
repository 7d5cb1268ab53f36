//! Benchmark of Sign and GenerateMac against the raw PKCS#11 call on the same SoftHSM2 token,
//! in one run: Sign with an ECC_NIST_P256 key (ECDSA_SHA_256) versus SHA-256 + `C_Sign`
//! (CKM_ECDSA), Sign with an RSA_2048 key (RSASSA_PKCS1_V1_5_SHA_256) versus SHA-256 +
//! `C_Sign` (CKM_RSA_PKCS over the DigestInfo), and GenerateMac with an HMAC_256 key versus
//! `C_Sign` (CKM_SHA256_HMAC). Issue 10's goal: each ratio >= 0.90. The key store's side
//! includes everything a call does (audit trail on, policy, state check, routing, DER).
//!
//! The two sides run in turns of short slices, so load from elsewhere hits both alike; each
//! figure is the median of the rounds; nothing is asserted (the machine is shared). The store
//! spreads a thread's calls over the cluster's two members in turn, so the raw side alternates
//! call by call between a session on each member's token, as the key store benchmark's raw
//! side does: both sides then do the same HSM work on the same tokens.
//!
//! Run: `cargo bench --bench key_specs` (`HSM_KMS_BENCH_SECS` sets the seconds per case and
//! round, default 2).

mod common;

use std::hint::black_box;
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use secrecy::SecretSlice;

use hsm_kms::cluster::Cluster;
use hsm_kms::keys::spec::Digest;
use hsm_kms::keystore::api::{CreateKeyRequest, GenerateMacRequest, SignRequest};
use hsm_kms::keystore::{Caller, KeyStore};

use common::token::open_session;
use common::{Res, Tally, interleave, load_average, median, run, verdict};

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

/// The sides in the order of their figures.
const SIDES: [Side; 2] = [Side::Store, Side::Raw];

/// A case: a key of the store and the raw call on the same tokens that it is compared with.
struct Case {
    label: &'static str,
    key_id: String,
    /// The key's object on each member, in the order of [`Raw::sessions`].
    raw_keys: Vec<ObjectHandle>,
    kind: Kind,
}

/// The raw side: a session on each member's token.
struct Raw {
    sessions: Vec<Session>,
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
    let duration = common::seconds(2.0)?;
    let dir = tempfile::tempdir()?;
    let config = common::make_cluster(dir.path(), 2)?;
    drop(Cluster::init(
        &config.default_cluster,
        config.default_cluster()?,
    )?);
    let store = KeyStore::open(&config)?;
    let caller = Caller::local(store.scope());
    let raw = Raw {
        sessions: config
            .default_cluster()?
            .members
            .iter()
            .map(open_session)
            .collect::<Res<_>>()?,
    };
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
        let mut raw_keys = Vec::new();
        for session in &raw.sessions {
            let found =
                session.find_objects(&[Attribute::Class(class), Attribute::Id(cka_id.clone())])?;
            raw_keys.push(
                *found
                    .first()
                    .ok_or("the key's object is not on every member")?,
            );
        }
        cases.push(Case {
            label,
            key_id: key.key_id,
            raw_keys,
            kind,
        });
    }
    println!(
        "Sign and GenerateMac vs the raw PKCS#11 call on the same SoftHSM2 token; {} CPU(s), load {} at start; {ROUNDS} rounds of {} s per side",
        common::cpus(),
        load_average(),
        duration.as_secs_f64(),
    );
    let slices = common::slices(duration, SLICE);
    for case in &cases {
        let mut rates = [Vec::new(), Vec::new()];
        let mut slice_of = |index: usize| -> Res<Tally> {
            run(SLICE, |n| {
                call(&store, &caller, &raw, case, SIDES[index], n)
            })
        };
        slice_of(0)?;
        slice_of(1)?;
        for _ in 0..ROUNDS {
            let tallies: [Tally; 2] = interleave(slices, &mut slice_of)?;
            for (rates, tally) in rates.iter_mut().zip(tallies) {
                rates.push(tally.per_second());
            }
        }
        let store_rate = median(&rates[0]);
        let raw_rate = median(&rates[1]);
        let ratio = store_rate / raw_rate;
        println!(
            "{:<42} store {store_rate:>8.0}/s  raw {raw_rate:>8.0}/s  ratio {ratio:.3} (goal >= {GOAL:.2}): {}",
            case.label,
            verdict(ratio >= GOAL)
        );
    }
    store.shutdown();
    Ok(())
}

/// Call `n` of `side` of `case`.
fn call(store: &KeyStore, caller: &Caller, raw: &Raw, case: &Case, side: Side, n: u64) -> Res<()> {
    let member = (n % raw.sessions.len() as u64) as usize;
    let (session, raw_key) = (&raw.sessions[member], case.raw_keys[member]);
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
            black_box(session.sign(&Mechanism::Sha256Hmac, raw_key, MESSAGE)?);
        }
        (Side::Raw, Kind::Ecdsa) => {
            let digest = Digest::Sha256.hash(MESSAGE);
            black_box(session.sign(&Mechanism::Ecdsa, raw_key, &digest)?);
        }
        (Side::Raw, Kind::RsaPkcs1) => {
            let mut input = Digest::Sha256.digest_info_prefix().to_vec();
            input.extend(Digest::Sha256.hash(MESSAGE));
            black_box(session.sign(&Mechanism::RsaPkcs, raw_key, &input)?);
        }
    }
    Ok(())
}
