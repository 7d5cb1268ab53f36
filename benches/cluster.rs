//! Benchmark of AES-256-GCM encryption inside SoftHSM2: raw `C_Encrypt` through cryptoki
//! versus the same call through hsm-kms's member and cluster layers, at 32 B and 4 KiB, and
//! two threads over two members versus one thread raw. It builds a throw-away two-member
//! cluster with `scripts/softhsm-cluster.sh`, prints ops/s and ratios next to their goals,
//! and never asserts a timing: the figures are for people, the machine is shared and noisy.
//!
//! Run: `cargo bench --bench cluster` (`HSM_KMS_BENCH_SECS` sets seconds per case, default 2).

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Duration;

use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use hsm_kms::cluster::{Cluster, MaterialId};
use hsm_kms::config::ClusterConfig;
use hsm_kms::hsm::GcmSeal;

use common::token::{Gcm, gcm, iv, one, open_session};
use common::{Res, Tally, interleave, load_average, median, run, verdict};

/// Rounds of every case; each figure is the median over rounds.
const ROUNDS: usize = 3;
/// Untimed run of every case before the timed ones.
const WARM_UP: Duration = Duration::from_millis(300);
/// Cases take turns in slices this long, so that load from elsewhere hits them alike.
const SLICE: Duration = Duration::from_millis(100);
/// Payload sizes measured.
const SIZES: [usize; 2] = [32, 4096];
const AAD: &[u8] = b"hsm-kms bench aad";

/// What one case drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// One thread, cryptoki `Session::encrypt` on hsm-a's token.
    Raw,
    /// One thread, `Member::encrypt` on hsm-a.
    Member,
    /// One thread, `Cluster::encrypt` (round-robin over hsm-a and hsm-b).
    Cluster,
    /// Two threads, `Cluster::encrypt`.
    Cluster2,
    /// Two threads, `Member::encrypt`, one pinned to each member: what routing that spreads
    /// concurrent calls over members would reach.
    Member2,
    /// Two threads, raw: one on hsm-a's token, one on hsm-b's (the ceiling for `Cluster2`).
    Raw2,
}

const CASES: [Case; 6] = [
    Case::Raw,
    Case::Member,
    Case::Cluster,
    Case::Cluster2,
    Case::Member2,
    Case::Raw2,
];

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Raw => "raw C_Encrypt, hsm-a, 1 thread",
            Case::Member => "Member::encrypt, hsm-a, 1 thread",
            Case::Cluster => "Cluster::encrypt, 2 members, 1 thread",
            Case::Cluster2 => "Cluster::encrypt, 2 members, 2 threads",
            Case::Member2 => "Member::encrypt, a thread per member",
            Case::Raw2 => "raw C_Encrypt, hsm-a + hsm-b, 2 threads",
        }
    }
}

/// A cryptoki session on one member's token, outside hsm-kms, and the CMK's handle there.
struct Raw {
    session: Session,
    key: ObjectHandle,
}

impl Raw {
    /// Opens a session on the member's token outside the cluster and finds the CMK by CKA_ID.
    fn open(config: &ClusterConfig, member: &str, cka_id: &[u8]) -> Res<Raw> {
        let member_config = config
            .members
            .iter()
            .find(|m| m.name == member)
            .ok_or_else(|| format!("no member {member} in the config"))?;
        let session = open_session(member_config)?;
        let key = one(
            &session,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(cka_id.to_vec()),
            ],
            member,
        )?;
        Ok(Raw { session, key })
    }

    fn encrypt(&self, iv: &[u8; 12], data: &[u8]) -> Res<Vec<u8>> {
        gcm(&self.session, Gcm::Encrypt, self.key, iv, AAD, data)
    }
}

fn seal() -> Res<GcmSeal<'static>> {
    GcmSeal::new(AAD, 128).map_err(|failure| failure.to_string().into())
}

/// Several threads, one `op` each, started together: all their calls over the longest time.
fn threads<F>(duration: Duration, ops: Vec<F>) -> Res<Tally>
where
    F: FnMut(u64) -> Res<()> + Send,
{
    let barrier = Barrier::new(ops.len());
    let results: Vec<Res<Tally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ops
            .into_iter()
            .map(|op| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    run(duration, op)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("bench thread panicked".into()))
            })
            .collect()
    });
    let mut total = Tally::default();
    for result in results {
        let tally = result?;
        total.calls += tally.calls;
        total.wall = total.wall.max(tally.wall);
        total.cpu += tally.cpu;
    }
    Ok(total)
}

/// One thread's raw loop body; owning `&mut Raw` makes it `Send` (a `Session` is not `Sync`).
fn raw_op<'a>(
    raw: &'a mut Raw,
    lane: u8,
    slice: u32,
    data: &'a [u8],
) -> impl FnMut(u64) -> Res<()> + Send + 'a {
    move |n| {
        black_box(raw.encrypt(&iv(lane, slice, n), data)?);
        Ok(())
    }
}

struct Bench<'a> {
    cluster: &'a Cluster,
    material: &'a MaterialId,
    raw_a: Raw,
    raw_b: Raw,
    /// Timed slices so far, for unique IVs.
    slices: u32,
}

impl Bench<'_> {
    /// Runs `case` on `size`-byte plaintexts for one slice of `duration`.
    fn measure(&mut self, case: Case, size: usize, duration: Duration) -> Res<Tally> {
        let data = vec![0x5a; size];
        let data = data.as_slice();
        let cluster = self.cluster;
        let material = self.material;
        let slice = self.slices;
        self.slices += 1;
        match case {
            Case::Raw => {
                let raw = &self.raw_a;
                run(duration, |n| {
                    black_box(raw.encrypt(&iv(0, slice, n), data)?);
                    Ok(())
                })
            }
            Case::Member => {
                let member = cluster.member("hsm-a").ok_or("no member hsm-a")?;
                let id = material.cka_id();
                run(duration, |_| {
                    black_box(member.encrypt(&id, &seal()?, data)?);
                    Ok(())
                })
            }
            Case::Cluster => run(duration, |_| {
                black_box(cluster.encrypt(material, &seal()?, data)?);
                Ok(())
            }),
            Case::Cluster2 => {
                let op = || {
                    move |_| -> Res<()> {
                        black_box(cluster.encrypt(material, &seal()?, data)?);
                        Ok(())
                    }
                };
                threads(duration, vec![op(), op()])
            }
            Case::Member2 => {
                let id = material.cka_id();
                let id = id.as_slice();
                let op = |name: &str| -> Res<_> {
                    let member = cluster.member(name).ok_or("missing member")?;
                    Ok(move |_| -> Res<()> {
                        black_box(member.encrypt(id, &seal()?, data)?);
                        Ok(())
                    })
                };
                threads(duration, vec![op("hsm-a")?, op("hsm-b")?])
            }
            Case::Raw2 => {
                let a = raw_op(&mut self.raw_a, 5, slice, data);
                let b = raw_op(&mut self.raw_b, 6, slice, data);
                threads(duration, vec![a, b])
            }
        }
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
    let cluster_config = config.default_cluster()?;
    let cluster = Cluster::init(&config.default_cluster, cluster_config)?;
    let material = MaterialId::new(uuid::Uuid::new_v4().to_string(), 1);
    cluster.create_key(&material, "hsm-kms benchmark key")?;
    let raw_a = Raw::open(cluster_config, "hsm-a", &material.cka_id())?;
    let raw_b = Raw::open(cluster_config, "hsm-b", &material.cka_id())?;

    // The raw handle must be the CMK the cluster uses: same IV, same bytes, from either member.
    for name in ["hsm-a", "hsm-b"] {
        let member = cluster.member(name).ok_or("missing member")?;
        let sealed = member.encrypt(&material.cka_id(), &seal()?, b"probe")?;
        if raw_a.encrypt(sealed.iv(), b"probe")? != sealed.ciphertext_and_tag() {
            return Err(format!("raw and {name} ciphertexts differ").into());
        }
    }

    let mut bench = Bench {
        cluster: &cluster,
        material: &material,
        raw_a,
        raw_b,
        slices: 0,
    };
    // figures[size][case][round], in ops/s.
    let mut figures = vec![vec![Vec::with_capacity(ROUNDS); CASES.len()]; SIZES.len()];
    let slices = common::slices(duration, SLICE);
    // Other work on the machine takes the cores the two-thread cases need: the load shows how much.
    println!(
        "AES-256-GCM encrypt in SoftHSM2, {} CPU(s), load average {} at start; per size {ROUNDS} rounds, each {} s per \
         case run as {slices} slices of {} ms, cases interleaved slice by slice",
        common::cpus(),
        load_average(),
        duration.as_secs_f64(),
        SLICE.as_millis()
    );
    for (s, &size) in SIZES.iter().enumerate() {
        for &case in &CASES {
            bench.measure(case, size, WARM_UP)?;
        }
        for round in 0..ROUNDS {
            let tallies: [Tally; CASES.len()] =
                interleave(slices, |c| bench.measure(CASES[c], size, SLICE))?;
            for (c, tally) in tallies.into_iter().enumerate() {
                let rate = tally.per_second();
                eprintln!(
                    "{size:>5} B round {}  {:<42} {rate:>9.0} ops/s",
                    round + 1,
                    CASES[c].label(),
                );
                figures[s][c].push(rate);
            }
        }
    }

    let at = |s: usize, case: Case| -> &[f64] {
        let c = CASES.iter().position(|&x| x == case).unwrap_or(0);
        &figures[s][c]
    };
    println!("load average {} at end", load_average());
    println!();
    println!(
        "{:<42} {:>7} {:>11} {:>11} {:>11}",
        "case", "size", "median/s", "min/s", "max/s"
    );
    for (s, &size) in SIZES.iter().enumerate() {
        for &case in &CASES {
            let values = at(s, case);
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(0.0, f64::max);
            println!(
                "{:<42} {:>5} B {:>11.0} {:>11.0} {:>11.0}",
                case.label(),
                size,
                median(values),
                min,
                max
            );
        }
    }

    // Each ratio is the median over rounds of the ratio within a round.
    let ratio = |s: usize, over: Case, under: Case| -> f64 {
        let pairs: Vec<f64> = at(s, over)
            .iter()
            .zip(at(s, under))
            .map(|(o, u)| o / u)
            .collect();
        median(&pairs)
    };
    let ratios: [(&str, Case, Case, Option<f64>); 6] = [
        (
            "member(hsm-a) / raw(hsm-a), same token",
            Case::Member,
            Case::Raw,
            Some(0.95),
        ),
        (
            "cluster 1 thread / raw 1 thread",
            Case::Cluster,
            Case::Raw,
            Some(0.95),
        ),
        (
            "cluster 2 threads / raw 1 thread",
            Case::Cluster2,
            Case::Raw,
            Some(1.6),
        ),
        (
            "raw 2 threads on 2 tokens / raw 1 thread",
            Case::Raw2,
            Case::Raw,
            None,
        ),
        (
            "cluster 2 threads / raw 2 threads",
            Case::Cluster2,
            Case::Raw2,
            None,
        ),
        (
            "member per thread / raw 2 threads",
            Case::Member2,
            Case::Raw2,
            None,
        ),
    ];
    println!();
    println!(
        "{:<42} {:>7} {:>8} {:>8}  verdict",
        "ratio", "size", "value", "goal"
    );
    for (s, &size) in SIZES.iter().enumerate() {
        for (label, over, under, goal) in ratios {
            let value = ratio(s, over, under);
            let (goal, verdict) = match goal {
                Some(goal) => (format!(">= {goal}"), verdict(value >= goal)),
                None => ("-".to_owned(), "(reference)"),
            };
            println!("{label:<42} {size:>5} B {value:>8.3} {goal:>8}  {verdict}");
        }
    }

    // Sessions and the cluster close before their token directories go.
    drop(bench);
    drop(cluster);
    dir.close()?;
    Ok(())
}
