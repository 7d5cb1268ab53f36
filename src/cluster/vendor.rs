//! Vendor-synchronised clusters (AWS CloudHSM): the HSM count cannot be read through
//! PKCS#11, so the HSMs listed in the config are probed by TCP connect.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::config::HsmEndpoint;

/// How long one HSM address gets to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of probing one listed HSM.
#[derive(Debug, Clone, Serialize)]
pub struct HsmProbe {
    /// The HSM's name in the config.
    pub name: String,
    /// The `host:port` probed.
    pub address: String,
    /// Its availability zone.
    pub zone: String,
    /// Whether a TCP connection succeeded within the timeout.
    pub reachable: bool,
    /// Why the connection failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Probes every listed HSM address.
pub fn probe_all(hsms: &[HsmEndpoint]) -> Vec<HsmProbe> {
    hsms.iter().map(probe).collect()
}

fn probe(hsm: &HsmEndpoint) -> HsmProbe {
    let error = connect(&hsm.address).err();
    HsmProbe {
        name: hsm.name.clone(),
        address: hsm.address.clone(),
        zone: hsm.zone.clone(),
        reachable: error.is_none(),
        error,
    }
}

fn connect(address: &str) -> Result<(), String> {
    let addresses = address
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {address}: {error}"))?;
    let mut last = format!("{address} resolves to no address");
    for candidate in addresses {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(error) => last = format!("cannot connect to {candidate}: {error}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn probes_listeners_and_closed_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap().to_string();
        let closed = {
            let gone = TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().to_string()
        };
        let hsms = [
            HsmEndpoint {
                name: "a".into(),
                address: live,
                zone: "z1".into(),
            },
            HsmEndpoint {
                name: "b".into(),
                address: closed,
                zone: "z2".into(),
            },
        ];
        let probes = probe_all(&hsms);
        assert!(probes[0].reachable);
        assert!(!probes[1].reachable);
        assert!(
            probes[1]
                .error
                .as_deref()
                .unwrap()
                .contains("cannot connect")
        );
    }
}
