//! `hsm-kms cluster ...`: the domain-key ceremony, linking two clusters, adding a member,
//! the preflight check and the status report. The status report also reconciles the HSMs
//! against the metadata store (through the running server's admin socket when `hsm-kms
//! serve` holds the store) and lists what does not match; it never repairs anything.

use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use serde_json::Value;

use super::via_server::ServerLink;
use crate::cluster::{Cluster, ClusterStatus};
use crate::config::Config;
use crate::hsm::ceremony;
use crate::keystore::KeyStore;
use crate::server::admin::AdminRequest;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Establish the cluster domain key on every member (idempotent).
    Init {
        /// Cluster to initialise (default: the default cluster).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Establish the link key of two initialised clusters on every member of both, so that
    /// multi-Region keys can be replicated between them (idempotent; needs both clusters'
    /// security officer PINs and quorums).
    Link {
        /// One cluster.
        a: String,
        /// The other cluster.
        b: String,
    },
    /// Bring a new, empty member (listed in the config) into an initialised cluster and copy
    /// every existing key onto it.
    AddMember {
        /// The member's name in the config.
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Run the preflight only; exit 0 when the cluster would serve.
    Check {
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Members, zones, health, key-object counts, how many members hold each key material
    /// version (and which are below full redundancy), degraded or not, and mismatches between
    /// the HSMs and the metadata. Exits 0 when the cluster would serve.
    Status {
        #[arg(long)]
        cluster: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, command: ClusterCommand) -> Result<ExitCode, String> {
    let name = |cluster: &Option<String>| {
        cluster
            .clone()
            .unwrap_or_else(|| config.default_cluster.clone())
    };
    match command {
        ClusterCommand::Init { cluster } => {
            let name = name(&cluster);
            let cluster_config = config.cluster(&name).map_err(|e| e.to_string())?;
            let cluster = Cluster::init(&name, cluster_config).map_err(|e| e.to_string())?;
            println!(
                "cluster {name}: domain key established on {} member(s) and proven equal",
                cluster.members().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Link { a, b } => {
            let first = config.cluster(&a).map_err(|e| e.to_string())?;
            let second = config.cluster(&b).map_err(|e| e.to_string())?;
            let (_, _, report) =
                Cluster::link((&a, first), (&b, second)).map_err(|e| e.to_string())?;
            if !report.received.is_empty() {
                println!("link key given to {}", report.received.join(", "));
            }
            println!(
                "clusters {a} and {b}: link key proven equal on {} member(s)",
                report.proven.len()
            );
            if !report.unreached.is_empty() {
                println!(
                    "not reached (run the ceremony again when they are back): {}",
                    report.unreached.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::AddMember {
            name: member,
            cluster,
        } => {
            let name = name(&cluster);
            let cluster_config = config.cluster(&name).map_err(|e| e.to_string())?;
            let members = Cluster::members_from_config(cluster_config);
            let target = members
                .iter()
                .find(|m| m.name() == member)
                .ok_or_else(|| {
                    format!(
                        "cluster {name} has no member {member:?} in the config; add it there first"
                    )
                })?
                .clone();
            if !ceremony::has_domain_key(&target).map_err(|e| e.to_string())? {
                let source = members
                    .iter()
                    .filter(|m| m.name() != member)
                    .find(|m| ceremony::has_domain_key(m).unwrap_or(false))
                    .ok_or_else(|| format!("no member of cluster {name} holds the domain key: run `hsm-kms cluster init`"))?
                    .clone();
                ceremony::distribute_domain_key(&source, std::slice::from_ref(&target))
                    .map_err(|e| e.to_string())?;
            }
            drop(members);
            drop(target);
            let cluster = Cluster::open(&name, cluster_config).map_err(|e| e.to_string())?;
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(format!("copying keys to {member}"));
            let copied = cluster
                .sync_member(&member, |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            println!("member {member} joined cluster {name}; {copied} key object(s) copied");
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Check { cluster } => {
            let name = name(&cluster);
            let cluster_config = config.cluster(&name).map_err(|e| e.to_string())?;
            match Cluster::open(&name, cluster_config) {
                Ok(cluster) => {
                    let status = cluster.status();
                    println!(
                        "cluster {name} would serve: {} of {} member(s) healthy{}",
                        status.members.iter().filter(|m| m.healthy).count(),
                        status.members.len(),
                        if status.degraded { " (degraded)" } else { "" }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("{error}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ClusterCommand::Status { cluster, json } => {
            let name = name(&cluster);
            let cluster_config = config.cluster(&name).map_err(|e| e.to_string())?;
            let cluster = match Cluster::open(&name, cluster_config) {
                Ok(cluster) => cluster,
                Err(error) => {
                    eprintln!("{error}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let status = cluster.status();
            let (inconsistencies, metadata_unavailable, material_pool) =
                match reconcile(config, cluster) {
                    Ok((found, ready)) => (
                        Some(found),
                        None,
                        Some(PoolSummary {
                            size: cluster_config.material_pool,
                            ready,
                        }),
                    ),
                    Err(why) => (None, Some(why), None),
                };
            let report = StatusReport {
                status: &status,
                inconsistencies,
                metadata_unavailable,
                material_pool,
            };
            if json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print_status(&report);
            }
            Ok(if status.serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// `cluster status`: the cluster's health plus what reconciliation found.
#[derive(Serialize)]
struct StatusReport<'a> {
    #[serde(flatten)]
    status: &'a ClusterStatus,
    /// HSM objects without metadata, metadata without HSM objects, interrupted creations;
    /// `null` when the metadata store could not be read.
    inconsistencies: Option<Vec<Found>>,
    /// Why the metadata store could not be read (e.g. the server holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_unavailable: Option<String>,
    /// The cluster's material pool: its configured size and the objects ready in it
    /// (`null` when the metadata store could not be read).
    material_pool: Option<PoolSummary>,
}

/// One mismatch reconciliation found: its JSON form and its sentence.
struct Found {
    json: Value,
    text: String,
}

impl Serialize for Found {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The material pool as `cluster status` reports it.
#[derive(Serialize)]
struct PoolSummary {
    size: usize,
    ready: usize,
}

/// Reconciles `cluster` (opened once, for the status too) against the metadata store, and
/// counts the ready objects of its material pool; a status report never creates a store
/// that is not there yet. While a server runs on the data directory, it reconciles.
fn reconcile(config: &Config, cluster: Cluster) -> Result<(Vec<Found>, usize), String> {
    if let Some(server) = ServerLink::connect(config) {
        let answer = server
            .request(&AdminRequest::Reconcile {
                cluster: cluster.name().to_owned(),
            })
            .map_err(|refused| refused.message)?;
        let found = answer["inconsistencies"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| Found {
                        json: item["json"].clone(),
                        text: item["text"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ready = answer["pool_ready"].as_u64().unwrap_or_default() as usize;
        return Ok((found, ready));
    }
    let data_dir = &config.service.data_dir;
    let on_sled = config.store == crate::store::StoreSettings::Sled {};
    if on_sled && !data_dir.exists() {
        return Err(format!(
            "there is no metadata store yet ({} does not exist)",
            data_dir.display()
        ));
    }
    let keystore =
        KeyStore::open_with_cluster(config, cluster).map_err(|e| super::open_failure(&e))?;
    let found = keystore
        .reconcile()
        .map_err(|e| format!("reconciliation failed: {e}"))?
        .iter()
        .map(|found| Found {
            json: serde_json::to_value(found).unwrap_or_default(),
            text: found.to_string(),
        })
        .collect();
    let ready = keystore
        .pooled_objects(keystore.cluster())
        .map_err(|e| format!("reading the material pool failed: {e}"))?
        .len();
    Ok((found, ready))
}

fn print_status(report: &StatusReport) {
    let status = report.status;
    let health = match (status.serving, status.degraded) {
        (true, false) => "healthy",
        (true, true) => "degraded",
        (false, _) => "NOT SERVING",
    };
    println!(
        "cluster {} ({} replication): {health}",
        status.cluster, status.replication
    );
    println!(
        "{:<12} {:<12} {:<8} {:>11}  error",
        "MEMBER", "ZONE", "HEALTH", "KEY OBJECTS"
    );
    for member in &status.members {
        println!(
            "{:<12} {:<12} {:<8} {:>11}  {}",
            member.name,
            member.zone,
            if member.healthy { "up" } else { "down" },
            member
                .key_objects
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            member.error.as_deref().unwrap_or("")
        );
    }
    for hsm in &status.hsms {
        println!(
            "hsm {:<10} {:<21} {:<12} {}",
            hsm.name,
            hsm.address,
            hsm.zone,
            if hsm.reachable {
                "reachable"
            } else {
                hsm.error.as_deref().unwrap_or("unreachable")
            }
        );
    }
    if !status.key_copies.is_empty() {
        println!("{:<48} {:>6}  members", "KEY MATERIAL", "COPIES");
        for key in &status.key_copies {
            println!(
                "{:<48} {:>6}  {}",
                key.material,
                format!("{}/{}", key.copies, status.members.len()),
                key.members.join(", ")
            );
        }
    }
    for link in &status.links {
        println!(
            "linked with cluster {}: link key on {}/{} members{}",
            link.cluster,
            link.members.len(),
            status.members.len(),
            if link.complete {
                String::new()
            } else {
                format!(" ({}; run `cluster link` again)", link.members.join(", "))
            }
        );
    }
    if let Some(pool) = &report.material_pool {
        println!("material pool: {} of {} ready", pool.ready, pool.size);
    }
    if status.below_full_redundancy.is_empty() {
        if !status.key_copies.is_empty() {
            println!("below full redundancy: none");
        }
    } else {
        println!("below full redundancy:");
        for material in &status.below_full_redundancy {
            println!("  - {material}");
        }
    }
    let inconsistencies = report.inconsistencies.as_deref().unwrap_or_default();
    if status.problems.is_empty() && inconsistencies.is_empty() {
        if report.inconsistencies.is_some() {
            println!("problems: none");
        }
    } else {
        println!("problems:");
        for problem in &status.problems {
            println!("  - {problem}");
        }
        for inconsistency in inconsistencies {
            println!("  - {inconsistency}");
        }
    }
    if let Some(why) = &report.metadata_unavailable {
        println!("metadata not checked: {why}");
    }
}
