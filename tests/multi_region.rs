//! Multi-Region keys across two sites: two SoftHSM2 clusters of two members each, linked by
//! `cluster link`; us-east-1 served by cluster `local`, eu-west-1 by cluster `site-b`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sites::{SITE_B, TwoSites};
use hsm_kms::cluster::Cluster;
use hsm_kms::hsm::templates::TrustedKey;

#[test]
fn cluster_link_gives_both_clusters_one_proven_link_key_idempotently() {
    let sites = TwoSites::new(2);
    let config = sites.config();
    let a = ("local", config.cluster("local").unwrap());
    let b = (SITE_B, config.cluster(SITE_B).unwrap());

    let (first, second, report) = Cluster::link(a, b).unwrap();
    assert_eq!(report.received.len(), 3, "{report:?}");
    assert_eq!(report.proven.len(), 4, "{report:?}");
    assert!(report.unreached.is_empty());
    let link = TrustedKey::link("local", SITE_B);
    for member in first.members().iter().chain(second.members()) {
        let attributes = member.key_attributes(&link.id).unwrap();
        assert!(attributes.trusted && attributes.sensitive && attributes.private);
        assert!(attributes.wrap_with_trusted && !attributes.encrypt && !attributes.decrypt);
    }
    for (cluster, peer) in [(&first, SITE_B), (&second, "local")] {
        let status = cluster.status();
        assert_eq!(status.links.len(), 1, "{:?}", status.links);
        assert_eq!(status.links[0].cluster, peer);
        assert!(status.links[0].complete);
        assert!(
            status.key_copies.is_empty(),
            "a link key is no key material"
        );
    }
    drop((first, second));

    // Again: nothing to give, everything proven again.
    let output = sites.cli(&["cluster", "link", SITE_B, "local"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("link key given to"), "{stdout}");
    assert!(stdout.contains("proven equal on 4 member(s)"), "{stdout}");
}

#[test]
fn cluster_link_is_refused_while_a_cluster_lacks_its_quorum() {
    let sites = TwoSites::new(2);
    sites.b.hide_token("hsm-b");
    let output = sites.cli(&["cluster", "link", "local", SITE_B]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot write key material to cluster site-b"),
        "{stderr}"
    );
    sites.b.restore_token("hsm-b");
    let config = sites.config();
    // Nothing was given to anyone: the first cluster's members still lack the link key.
    let first = Cluster::open("local", config.cluster("local").unwrap()).unwrap();
    assert!(first.status().links.is_empty());
}
