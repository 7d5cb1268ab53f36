//! Two sites in one test: two SoftHSM2 clusters of their own, `local` (the default
//! cluster, region us-east-1) and `site-b` (region eu-west-1), in one config.

use std::path::PathBuf;

use hsm_kms::cluster::Cluster;
use hsm_kms::config::Config;

use super::TestCluster;

/// The region served by the default cluster `local`.
pub const PRIMARY_REGION: &str = "us-east-1";
/// The region served by cluster `site-b`.
pub const REPLICA_REGION: &str = "eu-west-1";
/// The second site's cluster name.
pub const SITE_B: &str = "site-b";

/// Two SoftHSM2 clusters of `members` members each, each initialised, and the config that
/// serves us-east-1 from the first and eu-west-1 from the second (written to
/// `two-sites.toml` in the first cluster's directory).
pub struct TwoSites {
    pub a: TestCluster,
    pub b: TestCluster,
    pub config_text: String,
}

impl TwoSites {
    pub fn new(members: usize) -> TwoSites {
        let a = TestCluster::softhsm(members);
        let b = TestCluster::softhsm(members);
        let site_b = b.config_text[b.config_text.find("[clusters.local]").unwrap()..]
            .replace("clusters.local", &format!("clusters.{SITE_B}"));
        let config_text = format!(
            "{}\n{site_b}\n[service.region_clusters]\n{REPLICA_REGION} = \"{SITE_B}\"\n",
            a.config_text.replacen(
                &format!("region = \"{PRIMARY_REGION}\"\n"),
                &format!(
                    "region = \"{PRIMARY_REGION}\"\nregions = [\"{PRIMARY_REGION}\", \"{REPLICA_REGION}\"]\n"
                ),
                1,
            )
        );
        a.write_config("two-sites.toml", &config_text);
        let sites = TwoSites { a, b, config_text };
        let config = sites.config();
        drop(Cluster::init("local", config.cluster("local").unwrap()).unwrap());
        drop(Cluster::init(SITE_B, config.cluster(SITE_B).unwrap()).unwrap());
        sites
    }

    pub fn config(&self) -> Config {
        Config::parse(&self.config_text).unwrap()
    }

    pub fn config_path(&self) -> PathBuf {
        self.a.path("two-sites.toml")
    }

    /// Runs `hsm-kms cluster link local site-b`, which must succeed.
    pub fn link(&self) {
        let output = self.cli(&["cluster", "link", "local", SITE_B]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs the `hsm-kms` binary with the two-site config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_hsm-kms"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .unwrap()
    }
}
