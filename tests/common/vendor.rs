//! Vendor mode for the shared fixtures. With `HSM_KMS_TEST_REPLICATION=vendor` set, every
//! cluster a [`TestCluster`] configures becomes a vendor-synchronised cluster
//! (`replication = "vendor"`) whose one slot is the workspace's `pkcs11-vendor-sim` module
//! over the same SoftHSM2 tokens, so the tests written for hsm-kms replication also run
//! against a CloudHSM-like HSM. Unset (or `hsm-kms`), configurations are left as they are.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use toml::{Table, Value};

use super::TestCluster;

/// The environment variable choosing the replication the tests run with.
pub const VARIABLE: &str = "HSM_KMS_TEST_REPLICATION";

/// Whether the tests run in vendor mode.
pub fn enabled() -> bool {
    match std::env::var(VARIABLE).as_deref() {
        Ok("vendor") => true,
        Ok("hsm-kms") | Err(_) => false,
        Ok(other) => panic!("{VARIABLE} must be \"vendor\" or \"hsm-kms\", not {other:?}"),
    }
}

/// In vendor mode, prints why the calling test does not apply there and returns true.
pub fn skipped(reason: &str) -> bool {
    let skip = enabled();
    if skip {
        println!("skipped in vendor mode: {reason}");
    }
    skip
}

/// `text` with its clusters in the replication the tests run with (see the module doc).
pub fn in_test_mode(hsms: &TestCluster, text: &str) -> String {
    if enabled() {
        vendorise(hsms, text)
    } else {
        text.to_owned()
    }
}

/// `text` with every `replication = "hsm-kms"` cluster turned into a vendor cluster whose
/// slot is a copy of the module over the cluster's members (given their first member's user
/// PIN); the members become the cluster's `[[hsms]]`, probed at a local listener.
fn vendorise(hsms: &TestCluster, text: &str) -> String {
    let mut config: Table = text.parse().unwrap();
    let clusters = config["clusters"].as_table_mut().unwrap();
    for (name, cluster) in clusters.iter_mut() {
        let cluster = cluster.as_table_mut().unwrap();
        if cluster["replication"].as_str() != Some("hsm-kms") {
            continue;
        }
        let members: Vec<Table> = match cluster.remove("members") {
            Some(Value::Array(members)) => members
                .into_iter()
                .map(|member| member.as_table().unwrap().clone())
                .collect(),
            _ => panic!("cluster {name} lists no members"),
        };
        let dir = hsms.path(&format!("sim-{name}"));
        std::fs::create_dir(&dir).unwrap();
        // One process initialises a module path once: each cluster loads its own copy.
        let module = dir.join("libpkcs11_vendor_sim.so");
        std::fs::copy(built_module(), &module).unwrap();
        let sim_config = dir.join("sim.toml");
        std::fs::write(&sim_config, sim_config_text(name, &members)).unwrap();

        let mut slot = members[0].clone();
        slot.remove("so_pin");
        slot.remove("zone");
        slot.insert("name".into(), format!("{name}-slot").into());
        slot.insert("module".into(), path_value(&module));
        slot.insert("token".into(), name.as_str().into());
        let env = Table::from_iter([("PKCS11_VENDOR_SIM_CONF".into(), path_value(&sim_config))]);
        slot.insert("env".into(), env.into());
        let endpoints: Vec<Value> = members
            .iter()
            .map(|member| {
                Table::from_iter([
                    ("name".into(), member["name"].clone()),
                    ("address".into(), probe_address().into()),
                    ("zone".into(), member["zone"].clone()),
                ])
                .into()
            })
            .collect();
        cluster.insert("replication".into(), "vendor".into());
        cluster.insert("slot".into(), slot.into());
        cluster.insert("hsms".into(), endpoints.into());
    }
    toml::to_string(&config).unwrap()
}

/// The module's configuration: the members as backing tokens, after giving each the user
/// PIN of the first (a vendor cluster's users are the same on every HSM).
fn sim_config_text(token_label: &str, members: &[Table]) -> String {
    let pin = read_secret(&members[0]["user_pin"]);
    let backing: Vec<Value> = members
        .iter()
        .map(|member| {
            if read_secret(&member["user_pin"]) != pin {
                change_user_pin(member, &pin);
            }
            let token = member["token"].as_str().unwrap();
            let label = token.strip_prefix("pkcs11:token=").unwrap_or(token);
            Table::from_iter([
                ("name".into(), member["name"].clone()),
                ("module".into(), member["module"].clone()),
                ("token".into(), label.into()),
                ("env".into(), member["env"].clone()),
            ])
            .into()
        })
        .collect();
    let config = Table::from_iter([
        ("token_label".into(), token_label.into()),
        ("backing".into(), backing.into()),
    ]);
    toml::to_string(&config).unwrap()
}

/// The contents of a `file:` secret reference.
fn read_secret(reference: &Value) -> String {
    let path = reference.as_str().unwrap().strip_prefix("file:").unwrap();
    std::fs::read_to_string(path).unwrap()
}

/// Sets a member's user PIN (and its PIN file) to `pin`.
fn change_user_pin(member: &Table, pin: &str) {
    let token = member["token"].as_str().unwrap();
    let mut command = Command::new("pkcs11-tool");
    for (key, value) in member["env"].as_table().unwrap() {
        command.env(key, value.as_str().unwrap());
    }
    let output = command
        .arg("--module")
        .arg(member["module"].as_str().unwrap())
        .args([
            "--token-label",
            token.strip_prefix("pkcs11:token=").unwrap_or(token),
        ])
        .args(["--login", "--pin", &read_secret(&member["user_pin"])])
        .args(["--change-pin", "--new-pin", pin])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = member["user_pin"]
        .as_str()
        .unwrap()
        .strip_prefix("file:")
        .unwrap();
    std::fs::write(path, pin).unwrap();
}

fn path_value(path: &Path) -> Value {
    path.to_str().unwrap().into()
}

/// The address every listed HSM is probed at: a listener of this process that accepts and
/// drops connections for as long as the process runs.
fn probe_address() -> String {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS
        .get_or_init(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap().to_string();
            std::thread::spawn(move || for _ in listener.incoming() {});
            address
        })
        .clone()
}

/// Builds the module once per test process and returns the built library.
pub fn built_module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        // target/<profile>/deps/<test binary>: the module goes into the same target dir.
        let exe = std::env::current_exe().unwrap();
        let target_dir = exe.ancestors().nth(3).unwrap().to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "pkcs11-vendor-sim",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "building pkcs11-vendor-sim failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let module = target_dir.join("debug/libpkcs11_vendor_sim.so");
        assert!(module.exists(), "{} was not built", module.display());
        module
    })
}
