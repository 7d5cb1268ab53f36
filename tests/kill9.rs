//! Kill -9 under mixed load: four client threads drive the real `hsm-kms serve` over
//! SigV4-signed HTTP with CreateKey, CreateAlias/UpdateAlias, Encrypt/Decrypt,
//! Disable/Enable, Schedule/CancelKeyDeletion and RotateKeyOnDemand, each thread on keys and
//! aliases of its own so that the outcome of every call is known in advance. At a random
//! moment the server gets SIGKILL; then, on the files it left, `audit verify` must pass,
//! `cluster status` may report only what an interrupted call explains, and every
//! state-changing call that was answered must be in the audit trail under the request id
//! it was answered with. The server is restarted and checked: every acknowledged write is
//! there, every acknowledged ciphertext decrypts, and no key, alias or rotation exists
//! that no call made. A call in flight at the kill (sent, not answered) may or may not
//! have happened; the checker accepts either outcome for it and nothing else. The model
//! then adopts what happened and the load resumes, so kill points pile up on one data
//! directory.
//!
//! `HSM_KMS_KILL_POINTS` sets the number of kill points (default 20); `HSM_KMS_KILL_SEED`
//! replays a run (the seed is printed). The last line printed is
//! "N kill points, L acknowledged writes lost".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::TestCluster;
use common::server::{AccessKey, Client, Reply, Server, log_tail};
use serde_json::{Value, json};

/// Number of kill points (the torture script sets 1000).
const KILL_POINTS_ENV: &str = "HSM_KMS_KILL_POINTS";
const DEFAULT_KILL_POINTS: usize = 20;
/// Seed of the call choices and kill moments (printed by every run).
const SEED_ENV: &str = "HSM_KMS_KILL_SEED";
/// Client threads driving the server.
const THREADS: usize = 4;
/// Aliases made by this test start with this.
const ALIAS_PREFIX: &str = "alias/kill9/";
/// Load runs at least `LOAD_MIN` and less than `LOAD_MIN` + `LOAD_SPREAD_MS` before the kill.
const LOAD_MIN: Duration = Duration::from_millis(50);
const LOAD_SPREAD_MS: u64 = 1200;
/// A thread stops creating keys once it has this many keys not pending deletion...
const LIVE_KEYS_MAX: usize = 4;
/// ...or this many keys in all (keys pending deletion stay for 7 days).
const KEYS_MAX: usize = 40;
/// RotateKeyOnDemand's per-key limit.
const ON_DEMAND_ROTATIONS_MAX: u32 = 25;
/// Ciphertexts from earlier rounds decrypted at each kill point (all of them at the end).
const OLD_CIPHERTEXTS_CHECKED: usize = 16;

// ---------------------------------------------------------------- randomness

/// SplitMix64: small, seedable, good enough to pick calls.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    fn parse(wire: &str) -> Option<KeyState> {
        match wire {
            "Enabled" => Some(KeyState::Enabled),
            "Disabled" => Some(KeyState::Disabled),
            "PendingDeletion" => Some(KeyState::PendingDeletion),
            _ => None,
        }
    }
}

/// What one thread knows about one of its keys.
#[derive(Clone, Debug)]
struct KeyModel {
    id: String,
    arn: String,
    state: KeyState,
    rotations: u32,
}

/// An acknowledged Encrypt: the blob must decrypt to the plaintext with the context.
#[derive(Clone, Debug)]
struct Sealed {
    key: usize,
    blob: String,
    plaintext: String,
    context: BTreeMap<String, String>,
    round: usize,
}

/// One call a thread makes; keys are indexes into the thread's own keys.
#[derive(Clone, Debug)]
enum Call {
    CreateKey {
        description: String,
    },
    CreateAlias {
        alias: String,
        key: usize,
    },
    UpdateAlias {
        alias: String,
        key: usize,
    },
    Encrypt {
        key: usize,
        via_alias: Option<String>,
        plaintext: Vec<u8>,
        context: BTreeMap<String, String>,
    },
    Decrypt {
        sealed: usize,
    },
    DisableKey {
        key: usize,
    },
    EnableKey {
        key: usize,
    },
    ScheduleKeyDeletion {
        key: usize,
    },
    CancelKeyDeletion {
        key: usize,
    },
    RotateKeyOnDemand {
        key: usize,
    },
}

impl Call {
    fn operation(&self) -> &'static str {
        match self {
            Call::CreateKey { .. } => "CreateKey",
            Call::CreateAlias { .. } => "CreateAlias",
            Call::UpdateAlias { .. } => "UpdateAlias",
            Call::Encrypt { .. } => "Encrypt",
            Call::Decrypt { .. } => "Decrypt",
            Call::DisableKey { .. } => "DisableKey",
            Call::EnableKey { .. } => "EnableKey",
            Call::ScheduleKeyDeletion { .. } => "ScheduleKeyDeletion",
            Call::CancelKeyDeletion { .. } => "CancelKeyDeletion",
            Call::RotateKeyOnDemand { .. } => "RotateKeyOnDemand",
        }
    }

    /// Whether the call changes state (its audit event is durable before the answer).
    fn writes(&self) -> bool {
        !matches!(self, Call::Encrypt { .. } | Call::Decrypt { .. })
    }
}

/// A break of the guarantees, found by the checker.
#[derive(Debug)]
struct Violation {
    kill_point: usize,
    /// An acknowledged write or ciphertext that is gone.
    lost: bool,
    what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.lost { "LOST" } else { "WRONG" };
        write!(f, "kill point {}: {kind}: {}", self.kill_point, self.what)
    }
}

/// An answered state-changing call, for the audit-trail check.
struct AnsweredWrite {
    operation: &'static str,
    error_code: Option<String>,
    request_id: Option<String>,
}

/// One client thread's keys, aliases and ciphertexts, and its call in flight at the kill.
struct Worker {
    index: usize,
    rng: Rng,
    keys: Vec<KeyModel>,
    aliases: BTreeMap<String, usize>,
    sealed: Vec<Sealed>,
    names_used: usize,
    in_flight: Option<Call>,
    answered: Vec<AnsweredWrite>,
    violations: Vec<String>,
    calls: usize,
}

/// The expected answer of a call: success, or the AWS error code.
type Expected = Result<(), &'static str>;

impl Worker {
    fn new(index: usize, seed: u64) -> Worker {
        Worker {
            index,
            rng: Rng(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            keys: Vec::new(),
            aliases: BTreeMap::new(),
            sealed: Vec::new(),
            names_used: 0,
            in_flight: None,
            answered: Vec::new(),
            violations: Vec::new(),
            calls: 0,
        }
    }

    /// A number no earlier name of this thread used.
    fn fresh_name(&mut self) -> usize {
        self.names_used += 1;
        self.names_used
    }

    /// Picks the next call, weighted towards the cheap ones.
    fn next_call(&mut self) -> Call {
        let live = self
            .keys
            .iter()
            .filter(|k| k.state != KeyState::PendingDeletion)
            .count();
        if self.keys.is_empty()
            || (live < LIVE_KEYS_MAX && self.keys.len() < KEYS_MAX && self.rng.below(8) == 0)
        {
            let n = self.fresh_name();
            return Call::CreateKey {
                description: format!("kill9 thread {} key {n}", self.index),
            };
        }
        let key = self.rng.below(self.keys.len());
        match self.rng.below(20) {
            0..=5 => {
                let via_alias = self
                    .aliases
                    .iter()
                    .filter(|(_, k)| **k == key)
                    .map(|(alias, _)| alias.clone())
                    .next()
                    .filter(|_| self.rng.below(2) == 0);
                let len = 1 + self.rng.below(64);
                let context = (0..self.rng.below(3))
                    .map(|i| (format!("k{i}"), format!("v{}", self.rng.below(1000))))
                    .collect();
                Call::Encrypt {
                    key,
                    via_alias,
                    plaintext: self.rng.bytes(len),
                    context,
                }
            }
            6..=9 if !self.sealed.is_empty() => Call::Decrypt {
                sealed: self.rng.below(self.sealed.len()),
            },
            10 | 11 if self.aliases.len() < 50 => {
                let n = self.fresh_name();
                Call::CreateAlias {
                    alias: format!("{ALIAS_PREFIX}t{}/a{n}", self.index),
                    key,
                }
            }
            12 | 13 if !self.aliases.is_empty() => {
                let pick = self.rng.below(self.aliases.len());
                let alias = self.aliases.keys().nth(pick).cloned().unwrap_or_default();
                Call::UpdateAlias { alias, key }
            }
            14 => Call::DisableKey { key },
            15 => Call::EnableKey { key },
            16 if self.rng.below(3) == 0 => Call::ScheduleKeyDeletion { key },
            17 => Call::CancelKeyDeletion { key },
            18 => Call::RotateKeyOnDemand { key },
            _ if self.keys[key].state == KeyState::Enabled => Call::DisableKey { key },
            _ => Call::EnableKey { key },
        }
    }

    /// The request body of a call.
    fn body(&self, call: &Call) -> Value {
        let id = |key: &usize| json!(self.keys[*key].id);
        match call {
            Call::CreateKey { description } => json!({ "Description": description }),
            Call::CreateAlias { alias, key } | Call::UpdateAlias { alias, key } => {
                json!({ "AliasName": alias, "TargetKeyId": id(key) })
            }
            Call::Encrypt {
                key,
                via_alias,
                plaintext,
                context,
            } => json!({
                "KeyId": via_alias.as_ref().map_or_else(|| id(key), |alias| json!(alias)),
                "Plaintext": BASE64.encode(plaintext),
                "EncryptionContext": context,
            }),
            Call::Decrypt { sealed } => {
                let sealed = &self.sealed[*sealed];
                json!({ "CiphertextBlob": sealed.blob, "EncryptionContext": sealed.context })
            }
            Call::ScheduleKeyDeletion { key } => {
                json!({ "KeyId": id(key), "PendingWindowInDays": 7 })
            }
            Call::DisableKey { key }
            | Call::EnableKey { key }
            | Call::CancelKeyDeletion { key }
            | Call::RotateKeyOnDemand { key } => json!({ "KeyId": id(key) }),
        }
    }

    /// AWS's answer to the call in the current model (the key-state table).
    fn expected(&self, call: &Call) -> Expected {
        let state = |key: &usize| self.keys[*key].state;
        let crypto = |state: KeyState| match state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err("DisabledException"),
            KeyState::PendingDeletion => Err("KMSInvalidStateException"),
        };
        let not_pending = |state: KeyState| match state {
            KeyState::PendingDeletion => Err("KMSInvalidStateException"),
            _ => Ok(()),
        };
        match call {
            Call::CreateKey { .. } => Ok(()),
            Call::CreateAlias { alias, key } => {
                if self.aliases.contains_key(alias) {
                    Err("AlreadyExistsException")
                } else {
                    not_pending(state(key))
                }
            }
            Call::UpdateAlias { key, .. }
            | Call::DisableKey { key }
            | Call::EnableKey { key }
            | Call::ScheduleKeyDeletion { key } => not_pending(state(key)),
            Call::Encrypt { key, .. } => crypto(state(key)),
            Call::Decrypt { sealed } => crypto(state(&self.sealed[*sealed].key)),
            Call::CancelKeyDeletion { key } => match state(key) {
                KeyState::PendingDeletion => Ok(()),
                _ => Err("KMSInvalidStateException"),
            },
            Call::RotateKeyOnDemand { key } => match crypto(state(key)) {
                Ok(()) if self.keys[*key].rotations >= ON_DEMAND_ROTATIONS_MAX => {
                    Err("LimitExceededException")
                }
                other => other,
            },
        }
    }

    /// The key whose state decides the call's answer.
    fn key_of(&self, call: &Call) -> Option<usize> {
        match call {
            Call::CreateKey { .. } => None,
            Call::Decrypt { sealed } => Some(self.sealed[*sealed].key),
            Call::CreateAlias { key, .. }
            | Call::UpdateAlias { key, .. }
            | Call::Encrypt { key, .. }
            | Call::DisableKey { key }
            | Call::EnableKey { key }
            | Call::ScheduleKeyDeletion { key }
            | Call::CancelKeyDeletion { key }
            | Call::RotateKeyOnDemand { key } => Some(*key),
        }
    }

    /// Runs calls until the server stops answering.
    fn run(&mut self, client: &Client, round: usize) {
        self.answered.clear();
        loop {
            let call = self.next_call();
            let body = self.body(&call);
            let (reply, request_id) = match client.call_with_id(call.operation(), &body) {
                Ok(answer) => answer,
                Err(_) => {
                    self.in_flight = Some(call);
                    return;
                }
            };
            self.calls += 1;
            if let Err(problem) = self.acknowledge(&call, reply, request_id, round) {
                self.violations.push(format!(
                    "thread {}: {} {body}: {problem}",
                    self.index,
                    call.operation()
                ));
                return;
            }
        }
    }

    /// Checks an answer against the model and applies the call to it.
    fn acknowledge(
        &mut self,
        call: &Call,
        reply: Reply,
        request_id: Option<String>,
        round: usize,
    ) -> Result<(), String> {
        let expected = self.expected(call);
        let value = match (expected, reply) {
            (Ok(()), Reply::Ok(value)) => value,
            (Err(code), Reply::Error { code: got, message }) if got == code => {
                let state_error = matches!(code, "DisabledException" | "KMSInvalidStateException");
                if let Some(key) = self.key_of(call).filter(|_| state_error) {
                    let arn = &self.keys[key].arn;
                    if !message.starts_with(&format!("{arn} is ")) {
                        return Err(format!("{code} message {message:?} does not name {arn}"));
                    }
                }
                if call.writes() {
                    self.answered.push(AnsweredWrite {
                        operation: call.operation(),
                        error_code: Some(got),
                        request_id,
                    });
                }
                return Ok(());
            }
            (expected, reply) => return Err(format!("expected {expected:?}, got {reply:?}")),
        };
        if call.writes() {
            self.answered.push(AnsweredWrite {
                operation: call.operation(),
                error_code: None,
                request_id,
            });
        }
        match call {
            Call::CreateKey { .. } => {
                let metadata = &value["KeyMetadata"];
                let (Some(id), Some(arn)) = (metadata["KeyId"].as_str(), metadata["Arn"].as_str())
                else {
                    return Err(format!("no KeyId/Arn in {value}"));
                };
                self.keys.push(KeyModel {
                    id: id.to_owned(),
                    arn: arn.to_owned(),
                    state: KeyState::Enabled,
                    rotations: 0,
                });
            }
            Call::CreateAlias { alias, key } | Call::UpdateAlias { alias, key } => {
                self.aliases.insert(alias.clone(), *key);
            }
            Call::Encrypt {
                key,
                plaintext,
                context,
                ..
            } => {
                if value["KeyId"] != json!(self.keys[*key].arn) {
                    return Err(format!("Encrypt answered KeyId {}", value["KeyId"]));
                }
                let Some(blob) = value["CiphertextBlob"].as_str() else {
                    return Err(format!("no CiphertextBlob in {value}"));
                };
                self.sealed.push(Sealed {
                    key: *key,
                    blob: blob.to_owned(),
                    plaintext: BASE64.encode(plaintext),
                    context: context.clone(),
                    round,
                });
            }
            Call::Decrypt { sealed } => {
                let sealed = &self.sealed[*sealed];
                if value["Plaintext"] != json!(sealed.plaintext)
                    || value["KeyId"] != json!(self.keys[sealed.key].arn)
                {
                    return Err(format!(
                        "Decrypt gave the wrong plaintext or key ({})",
                        value["KeyId"]
                    ));
                }
            }
            Call::DisableKey { key } => self.keys[*key].state = KeyState::Disabled,
            Call::EnableKey { key } => self.keys[*key].state = KeyState::Enabled,
            Call::ScheduleKeyDeletion { key } => {
                self.keys[*key].state = KeyState::PendingDeletion;
            }
            Call::CancelKeyDeletion { key } => self.keys[*key].state = KeyState::Disabled,
            Call::RotateKeyOnDemand { key } => self.keys[*key].rotations += 1,
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the checker

/// Everything the checker carries from one kill point to the next.
struct Checker {
    kill_point: usize,
    violations: Vec<Violation>,
    /// CreateKeys in flight at a kill whose key never appeared: each may have left one
    /// interrupted creation in the HSMs.
    vanished_creates: usize,
    /// Keys created by a call in flight at a kill, or rotated by one.
    interrupted_keys: BTreeSet<String>,
    in_flight_calls: usize,
    in_flight_applied: usize,
}

impl Checker {
    fn wrong(&mut self, what: String) {
        self.violations.push(Violation {
            kill_point: self.kill_point,
            lost: false,
            what,
        });
    }

    fn lost(&mut self, what: String) {
        self.violations.push(Violation {
            kill_point: self.kill_point,
            lost: true,
            what,
        });
    }

    /// On the files the killed server left: the audit chain verifies, every answered
    /// state-changing call of the round is in the trail, and `cluster status` reports only
    /// what an interrupted call explains.
    fn check_files(&mut self, cluster: &TestCluster, workers: &[Worker], round_start: SystemTime) {
        let verify = cluster.cli(&["audit", "verify"]);
        if !verify.status.success() {
            self.wrong(format!(
                "audit verify failed: {}{}",
                String::from_utf8_lossy(&verify.stdout),
                String::from_utf8_lossy(&verify.stderr)
            ));
        }

        // CloudTrail's eventTime has whole seconds: start at the round's second. The round
        // before it made no state-changing call in that second (its checks took longer).
        let since = humantime::format_rfc3339_seconds(round_start).to_string();
        let listed = cluster.cli(&["audit", "list", "--since", &since, "--format", "json"]);
        if !listed.status.success() {
            self.wrong(format!(
                "audit list failed: {}",
                String::from_utf8_lossy(&listed.stderr)
            ));
        }
        let mut recorded: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
        let mut by_request_id: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let name = event["eventName"].as_str().unwrap_or_default().to_owned();
            let code = event["errorCode"].as_str().map(str::to_owned);
            if let Some(request_id) = event["requestID"].as_str() {
                by_request_id.insert(request_id.to_owned(), (name.clone(), code.clone()));
            }
            *recorded.entry((name, code)).or_default() += 1;
        }
        let mut answered: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
        let mut unmatched = Vec::new();
        for call in workers.iter().flat_map(|w| &w.answered) {
            let key = (call.operation.to_owned(), call.error_code.clone());
            *answered.entry(key.clone()).or_default() += 1;
            // CloudTrail's requestID is the x-amzn-RequestId the caller was answered with.
            let recorded_as = call
                .request_id
                .as_ref()
                .and_then(|id| by_request_id.get(id));
            if recorded_as != Some(&key) {
                unmatched.push(format!("{} {:?}", call.operation, call.request_id));
            }
        }
        if let Some(example) = unmatched.first() {
            self.wrong(format!(
                "{} answered state-changing calls have no audit event under the x-amzn-RequestId they were answered with, e.g. {example}",
                unmatched.len()
            ));
        }
        for ((name, code), count) in answered {
            let found = recorded
                .get(&(name.clone(), code.clone()))
                .copied()
                .unwrap_or(0);
            if found < count {
                self.lost(format!(
                    "{count} answered {name} calls ({}) but {found} audit events",
                    code.as_deref().unwrap_or("success")
                ));
            }
        }

        let status = cluster.cli(&["cluster", "status", "--json"]);
        let report: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
        if !status.status.success() || !report["inconsistencies"].is_array() {
            self.wrong(format!(
                "cluster status failed or could not reconcile: {}{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr)
            ));
            return;
        }
        let known: BTreeSet<&str> = workers
            .iter()
            .flat_map(|w| w.keys.iter().map(|k| k.id.as_str()))
            .collect();
        let in_flight_creates = workers
            .iter()
            .filter(|w| matches!(w.in_flight, Some(Call::CreateKey { .. })))
            .count();
        let in_flight_rotations: BTreeSet<&str> = workers
            .iter()
            .filter_map(|w| match &w.in_flight {
                Some(Call::RotateKeyOnDemand { key }) => Some(w.keys[*key].id.as_str()),
                _ => None,
            })
            .collect();
        let mut unknown_materials = BTreeSet::new();
        let mut unexplained = Vec::new();
        for item in report["inconsistencies"].as_array().into_iter().flatten() {
            let kind = item["kind"].as_str().unwrap_or_default();
            let material = item["material"].as_str().unwrap_or_default();
            let key_id = material.split('/').next().unwrap_or_default();
            let explained = match kind {
                "interrupted_create" | "orphan_material" => {
                    if known.contains(key_id) {
                        self.interrupted_keys.contains(key_id)
                            || in_flight_rotations.contains(key_id)
                    } else {
                        unknown_materials.insert(key_id.to_owned());
                        true
                    }
                }
                _ => false,
            };
            if !explained {
                unexplained.push(item.to_string());
            }
        }
        // A CreateKey of this kill point may yet appear as a key after the restart.
        if unknown_materials.len() > self.vanished_creates + in_flight_creates {
            unexplained.push(format!(
                "material of {} unknown keys but only {} creations were ever interrupted",
                unknown_materials.len(),
                self.vanished_creates + in_flight_creates
            ));
        }
        for item in unexplained {
            self.wrong(format!(
                "cluster status reports what no call explains: {item}"
            ));
        }
    }

    /// After the restart: settles each call in flight at the kill to one of its two
    /// outcomes, then compares everything with the model.
    fn check_server(
        &mut self,
        client: &Client,
        workers: &mut [Worker],
        round: usize,
        final_check: bool,
    ) {
        let listed = client.list("ListKeys", json!({ "Limit": 1000 }), "Keys");
        let observed_keys: BTreeMap<String, KeyState> = listed
            .iter()
            .filter_map(|k| k["KeyId"].as_str())
            .map(|id| {
                let metadata = client.must("DescribeKey", &json!({ "KeyId": id }));
                let state = metadata["KeyMetadata"]["KeyState"]
                    .as_str()
                    .and_then(KeyState::parse);
                (id.to_owned(), state)
            })
            .filter_map(|(id, state)| match state {
                Some(state) => Some((id, state)),
                None => {
                    self.wrong(format!("key {id} is in a state no call puts a key in"));
                    None
                }
            })
            .collect();
        let aliases: BTreeMap<String, String> = client
            .list("ListAliases", json!({ "Limit": 100 }), "Aliases")
            .iter()
            .filter_map(|a| {
                Some((
                    a["AliasName"].as_str()?.to_owned(),
                    a["TargetKeyId"].as_str()?.to_owned(),
                ))
            })
            .filter(|(name, _)| name.starts_with(ALIAS_PREFIX))
            .collect();

        // Keys no model knows: only a CreateKey in flight can have made one.
        let known: BTreeSet<String> = workers
            .iter()
            .flat_map(|w| w.keys.iter().map(|k| k.id.clone()))
            .collect();
        for (id, state) in observed_keys.iter().filter(|(id, _)| !known.contains(*id)) {
            let metadata = client.must("DescribeKey", &json!({ "KeyId": id }));
            let description = metadata["KeyMetadata"]["Description"]
                .as_str()
                .unwrap_or_default();
            let owner = workers.iter_mut().find(|w| {
                matches!(&w.in_flight, Some(Call::CreateKey { description: d }) if d == description)
            });
            match owner {
                Some(worker) if *state == KeyState::Enabled => {
                    worker.keys.push(KeyModel {
                        id: id.clone(),
                        arn: metadata["KeyMetadata"]["Arn"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        state: KeyState::Enabled,
                        rotations: 0,
                    });
                    worker.in_flight = None;
                    self.interrupted_keys.insert(id.clone());
                    self.in_flight_applied += 1;
                }
                _ => self.wrong(format!(
                    "key {id} ({description:?}, {state:?}) was made by no call"
                )),
            }
        }

        for worker in workers.iter_mut() {
            let Some(call) = worker.in_flight.take() else {
                continue;
            };
            self.in_flight_calls += 1;
            let applied = match &call {
                Call::CreateKey { .. } => {
                    self.vanished_creates += 1;
                    false
                }
                Call::Encrypt { .. } | Call::Decrypt { .. } => false,
                Call::CreateAlias { alias, key } | Call::UpdateAlias { alias, key } => {
                    let target = &worker.keys[*key].id;
                    let before = worker.aliases.get(alias).map(|k| &worker.keys[*k].id);
                    let now = aliases.get(alias);
                    let may_apply = worker.expected(&call).is_ok();
                    if now == before {
                        false
                    } else if may_apply && now == Some(target) {
                        worker.aliases.insert(alias.clone(), *key);
                        true
                    } else {
                        self.wrong(format!(
                            "{} of {alias} in flight to {target}: now {now:?}, before {before:?}",
                            call.operation()
                        ));
                        false
                    }
                }
                Call::DisableKey { key }
                | Call::EnableKey { key }
                | Call::ScheduleKeyDeletion { key }
                | Call::CancelKeyDeletion { key } => {
                    let model = &worker.keys[*key];
                    let after = match (&call, worker.expected(&call)) {
                        (_, Err(_)) => model.state,
                        (Call::EnableKey { .. }, Ok(())) => KeyState::Enabled,
                        (Call::ScheduleKeyDeletion { .. }, Ok(())) => KeyState::PendingDeletion,
                        _ => KeyState::Disabled,
                    };
                    let now = observed_keys.get(&model.id).copied();
                    if now == Some(model.state) {
                        false
                    } else if now == Some(after) {
                        worker.keys[*key].state = after;
                        true
                    } else {
                        self.wrong(format!(
                            "{} of key {} in flight: the key is {now:?}, neither {:?} nor {after:?}",
                            call.operation(),
                            model.id,
                            model.state
                        ));
                        false
                    }
                }
                Call::RotateKeyOnDemand { key } => {
                    let model = &worker.keys[*key];
                    let now = rotations(client, &model.id);
                    self.interrupted_keys.insert(model.id.clone());
                    if now == model.rotations + 1 && worker.expected(&call).is_ok() {
                        worker.keys[*key].rotations += 1;
                        true
                    } else {
                        false
                    }
                }
            };
            if applied {
                self.in_flight_applied += 1;
            }
        }

        for worker in workers.iter() {
            for model in &worker.keys {
                match observed_keys.get(&model.id) {
                    None => self.lost(format!("key {} is gone", model.id)),
                    Some(state) if *state != model.state => self.lost(format!(
                        "key {} is {state:?}; the last answered call left it {:?}",
                        model.id, model.state
                    )),
                    Some(_) => {}
                }
                let rotated = rotations(client, &model.id);
                if rotated != model.rotations {
                    self.lost(format!(
                        "key {} has {rotated} rotations; {} were answered",
                        model.id, model.rotations
                    ));
                }
            }
            let prefix = format!("{ALIAS_PREFIX}t{}/", worker.index);
            let mine: BTreeMap<&String, &String> = aliases
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .collect();
            for (alias, key) in &worker.aliases {
                let target = &worker.keys[*key].id;
                match mine.get(alias) {
                    Some(now) if *now == target => {}
                    now => self.lost(format!("alias {alias} points to {now:?}, not {target}")),
                }
            }
            for alias in mine.keys().filter(|a| !worker.aliases.contains_key(**a)) {
                self.wrong(format!(
                    "alias {alias} was made by no answered or in-flight call"
                ));
            }
        }
        self.check_ciphertexts(client, workers, round, final_check);
    }

    /// Decrypts this round's ciphertexts of usable keys and some older ones (every one on
    /// the final check, after enabling every key).
    fn check_ciphertexts(
        &mut self,
        client: &Client,
        workers: &mut [Worker],
        round: usize,
        final_check: bool,
    ) {
        for worker in workers.iter_mut() {
            if final_check {
                for key in &mut worker.keys {
                    if key.state == KeyState::PendingDeletion {
                        client.must("CancelKeyDeletion", &json!({ "KeyId": key.id }));
                    }
                    client.must("EnableKey", &json!({ "KeyId": key.id }));
                    key.state = KeyState::Enabled;
                }
            }
            let old: Vec<usize> = (0..worker.sealed.len())
                .filter(|i| worker.sealed[*i].round != round)
                .collect();
            let mut picked: Vec<usize> = (0..worker.sealed.len())
                .filter(|i| final_check || worker.sealed[*i].round == round)
                .collect();
            if !final_check && !old.is_empty() {
                for _ in 0..OLD_CIPHERTEXTS_CHECKED {
                    picked.push(old[worker.rng.below(old.len())]);
                }
            }
            for index in picked {
                let sealed = &worker.sealed[index];
                let key = &worker.keys[sealed.key];
                if key.state != KeyState::Enabled {
                    continue;
                }
                let body =
                    json!({ "CiphertextBlob": sealed.blob, "EncryptionContext": sealed.context });
                match client.call("Decrypt", &body) {
                    Ok(Reply::Ok(value)) if value["Plaintext"] == json!(sealed.plaintext) => {}
                    other => self.lost(format!(
                        "a ciphertext of key {} from kill point {} does not decrypt: {other:?}",
                        key.id, sealed.round
                    )),
                }
            }
        }
    }
}

/// How many rotations ListKeyRotations shows for a key.
fn rotations(client: &Client, key_id: &str) -> u32 {
    client
        .list(
            "ListKeyRotations",
            json!({ "KeyId": key_id, "Limit": 1000 }),
            "Rotations",
        )
        .len() as u32
}

// ---------------------------------------------------------------- the test

#[test]
fn sigkill_under_mixed_load_loses_no_acknowledged_write() {
    let kill_points: usize = std::env::var(KILL_POINTS_ENV)
        .ok()
        .map_or(DEFAULT_KILL_POINTS, |v| {
            v.parse().expect("HSM_KMS_KILL_POINTS is a number")
        });
    let seed: u64 = std::env::var(SEED_ENV).ok().map_or_else(
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |v| v.parse().expect("HSM_KMS_KILL_SEED is a number"),
    );
    println!("kill9: {kill_points} kill points, seed {seed} ({SEED_ENV}={seed} replays it)");

    let cluster = TestCluster::new(2);
    cluster.init();
    let key = AccessKey::of(&cluster);
    let mut rng = Rng(seed);
    let mut workers: Vec<Worker> = (0..THREADS)
        .map(|i| Worker::new(i, seed.wrapping_add(i as u64 + 1)))
        .collect();
    let mut checker = Checker {
        kill_point: 0,
        violations: Vec::new(),
        vanished_creates: 0,
        interrupted_keys: BTreeSet::new(),
        in_flight_calls: 0,
        in_flight_applied: 0,
    };
    let mut server = Server::start(&cluster);

    for kill_point in 1..=kill_points {
        checker.kill_point = kill_point;
        let round_start = SystemTime::now();
        let load = LOAD_MIN + Duration::from_millis(rng.next() % LOAD_SPREAD_MS);
        let clients: Vec<Client> = workers.iter().map(|_| Client::new(&server, &key)).collect();
        std::thread::scope(|scope| {
            for (worker, client) in workers.iter_mut().zip(&clients) {
                scope.spawn(move || worker.run(client, kill_point));
            }
            std::thread::sleep(load);
            // SIGKILL while the threads are mid-call; they stop on the broken connection.
            server.kill();
        });
        let mut model_broken = false;
        for worker in &mut workers {
            for problem in worker.violations.drain(..) {
                checker.wrong(problem);
                model_broken = true;
            }
        }
        // What the files show (audit trail, reconciliation) leaves the model as it is: the
        // run goes on after such findings, and stops once the model and the server differ.
        checker.check_files(&cluster, &workers, round_start);
        let found_on_files = checker.violations.len();
        server = Server::start(&cluster);
        let client = Client::new(&server, &key);
        checker.check_server(&client, &mut workers, kill_point, kill_point == kill_points);
        if model_broken || checker.violations.len() > found_on_files {
            break;
        }
    }
    server.kill();

    let calls: usize = workers.iter().map(|w| w.calls).sum();
    let keys: usize = workers.iter().map(|w| w.keys.len()).sum();
    let ciphertexts: usize = workers.iter().map(|w| w.sealed.len()).sum();
    println!(
        "kill9: {calls} answered calls, {keys} keys, {ciphertexts} ciphertexts; {} calls in flight at a kill, {} of them took effect",
        checker.in_flight_calls, checker.in_flight_applied
    );
    for violation in &checker.violations {
        println!("kill9: {violation}");
    }
    let lost = checker.violations.iter().filter(|v| v.lost).count();
    println!(
        "{} kill points, {lost} acknowledged writes lost",
        checker.kill_point
    );
    assert!(
        checker.violations.is_empty(),
        "{} violations (first: {}); server log tail:\n{}",
        checker.violations.len(),
        checker.violations[0],
        log_tail(&cluster)
    );
}

/// A RotateKeyOnDemand cut off after the HSMs made the new material version (before the
/// key record names it) must not make the next, acknowledged rotation ambiguous: the
/// ciphertexts of the new version must decrypt. (Found by the kill test: the next rotation
/// reused the interrupted one's version number, two HSM objects shared its CKA_ID, and
/// once the server restarted, Decrypt answered KMSInternalException.)
#[test]
fn a_rotation_cut_off_after_the_hsm_write_leaves_the_next_rotation_usable() {
    let cluster = TestCluster::new(2);
    cluster.init();
    let access_key = AccessKey::of(&cluster);

    let mut server = Server::start(&cluster);
    let client = Client::new(&server, &access_key);
    let created = client.must("CreateKey", &json!({}));
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    server.kill();

    let mut crashing = Server::start_crashing_at(&cluster, Some("create-material:after-hsm"));
    let cut_off =
        Client::new(&crashing, &access_key).call("RotateKeyOnDemand", &json!({ "KeyId": key_id }));
    assert!(cut_off.is_err(), "the rotation was answered: {cut_off:?}");
    let status = crashing.child.wait().unwrap();
    assert!(
        !status.success(),
        "the server did not stop at the crash point"
    );

    let mut server = Server::start(&cluster);
    let client = Client::new(&server, &access_key);
    client.must("RotateKeyOnDemand", &json!({ "KeyId": key_id }));
    assert_eq!(rotations(&client, &key_id), 1);
    let plaintext = BASE64.encode(b"after an interrupted rotation");
    let sealed = client.must(
        "Encrypt",
        &json!({ "KeyId": key_id, "Plaintext": plaintext }),
    );
    // A fresh process: no HSM object handle is cached, each is looked up by CKA_ID.
    server.kill();
    let mut server = Server::start(&cluster);
    let client = Client::new(&server, &access_key);
    let decrypted = client.call(
        "Decrypt",
        &json!({ "CiphertextBlob": sealed["CiphertextBlob"] }),
    );
    server.kill();
    match decrypted {
        Ok(Reply::Ok(value)) => assert_eq!(value["Plaintext"], json!(plaintext)),
        other => panic!(
            "a ciphertext of the acknowledged rotation does not decrypt: {other:?}\n{}",
            log_tail(&cluster)
        ),
    }
}
