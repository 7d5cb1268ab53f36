//! Encrypt throughput of the key store with its audit trail on versus off, in one run on the
//! same SoftHSM2 tokens (goal: on / off ≥ 0.9). Two key stores share one throw-away
//! two-member cluster, each with its own sled directory: one records every call (events of
//! crypto calls are group-committed), the other records nothing. They take turns in 100 ms
//! slices so that load from elsewhere hits both alike; the figures are medians of five rounds
//! and are printed, never asserted.
//!
//! Run: `cargo bench --bench audit` (`HSM_KMS_BENCH_SECS` sets seconds per case and round).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_kms::audit::log::AuditSettings;
use hsm_kms::clock::SystemClock;
use hsm_kms::cluster::Cluster;
use hsm_kms::config::Config;
use hsm_kms::ids::Scope;
use hsm_kms::keystore::api::{CreateKeyRequest, EncryptRequest};
use hsm_kms::keystore::{Caller, KeyStore};
use hsm_kms::store::SledStore;
use secrecy::SecretSlice;

use common::{Res, load_average, median, verdict};

/// On / off, issue 16's goal.
const GOAL: f64 = 0.9;
const ROUNDS: usize = 5;
const SLICE: Duration = Duration::from_millis(100);

/// One key store and the key it encrypts under.
struct Side {
    store: KeyStore,
    caller: Caller,
    key_id: String,
    calls: u64,
    busy: Duration,
}

impl Side {
    fn open(config: &Config, data_dir: PathBuf, audit: AuditSettings) -> Res<Side> {
        let cluster = Cluster::open(&config.default_cluster, config.default_cluster()?)?;
        let scope = Scope::new(&config.service.region, &config.service.account_id)?;
        let metadata = SledStore::open(data_dir)?;
        let store = KeyStore::with_parts(
            scope,
            cluster,
            Box::new(metadata),
            Arc::new(SystemClock),
            audit,
        )?;
        let caller = Caller::local(store.scope());
        let key_id = store
            .create_key(&caller, CreateKeyRequest::default())?
            .key_metadata
            .key_id;
        Ok(Side {
            store,
            caller,
            key_id,
            calls: 0,
            busy: Duration::ZERO,
        })
    }

    fn slice(&mut self) -> Res<()> {
        let started = Instant::now();
        while started.elapsed() < SLICE {
            self.store.encrypt(
                &self.caller,
                EncryptRequest {
                    key_id: self.key_id.clone(),
                    plaintext: SecretSlice::from(vec![0x5a; 32]),
                    ..Default::default()
                },
            )?;
            self.calls += 1;
        }
        self.busy += started.elapsed();
        Ok(())
    }

    fn rate(&mut self) -> f64 {
        let rate = self.calls as f64 / self.busy.as_secs_f64();
        self.calls = 0;
        self.busy = Duration::ZERO;
        rate
    }
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

    let mut on = Side::open(
        &config,
        dir.path().join("audit-on"),
        AuditSettings::default(),
    )?;
    let off_settings = AuditSettings {
        enabled: false,
        ..AuditSettings::default()
    };
    let mut off = Side::open(&config, dir.path().join("audit-off"), off_settings)?;
    for _ in 0..3 {
        on.slice()?;
        off.slice()?;
    }
    on.rate();
    off.rate();

    let (mut on_rates, mut off_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let slices = common::slices(duration, SLICE);
        for _ in 0..slices {
            on.slice()?;
            off.slice()?;
        }
        let (a, b) = (on.rate(), off.rate());
        on_rates.push(a);
        off_rates.push(b);
        ratios.push(a / b);
    }
    let ratio = median(&ratios);
    println!(
        "Encrypt 32 B, audit trail on vs off (same tokens, alternating {} ms slices, median of {ROUNDS} rounds)",
        SLICE.as_millis()
    );
    println!("  audit on : {:>9.0} calls/s", median(&on_rates));
    println!("  audit off: {:>9.0} calls/s", median(&off_rates));
    println!(
        "  on / off : {ratio:>9.3}   goal >= {GOAL}: {}",
        verdict(ratio >= GOAL)
    );
    println!("  load average {} at end", load_average());
    on.store.shutdown();
    off.store.shutdown();
    Ok(())
}
