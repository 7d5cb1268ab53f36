"""TLS with rustls, and plain HTTP refused off loopback.

A second cluster is served over HTTPS with a self-signed certificate made by openssl; boto3
and the hsm-kms CLI (`--endpoint-url` with `--ca-bundle`) talk to it verifying that
certificate. Asking the server for plain HTTP on a non-loopback
address makes it refuse to start.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import boto3
import botocore.config
import pytest
import requests

from conftest import PROFILE, REGION, REPO, _free_port

BINARY = REPO / "target" / "debug" / "hsm-kms"


@pytest.fixture(scope="module")
def tls_server(server, tmp_path_factory):
    """`hsm-kms serve` over HTTPS on its own cluster (the `server` fixture built the binary)."""
    work = tmp_path_factory.mktemp("tls")
    cluster = work / "cluster"
    subprocess.run([REPO / "scripts" / "softhsm-cluster.sh", cluster, "2"], check=True, capture_output=True)
    config = cluster / "hsm-kms.toml"
    subprocess.run([BINARY, "--config", config, "cluster", "init"], check=True, capture_output=True)
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         # Not a CA: webpki (rustls clients) refuses a CA certificate as a server's own.
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    with config.open("a") as text:
        text.write(f'\n[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    port = _free_port()
    endpoint = f"https://127.0.0.1:{port}"
    log = work / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BINARY, "--config", config, "serve", "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if requests.get(f"{endpoint}/healthz", verify=str(cert), timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield endpoint, cert, cluster / "credentials"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()


def test_boto3_over_tls(tls_server):
    endpoint, cert, credentials = tls_server
    session = boto3.Session(
        aws_access_key_id=_profile_value(credentials, "aws_access_key_id"),
        aws_secret_access_key=_profile_value(credentials, "aws_secret_access_key"),
        region_name=REGION,
    )
    kms = session.client(
        "kms", endpoint_url=endpoint, verify=str(cert),
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    key_id = kms.create_key(Description="over TLS")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"sealed in transit")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"sealed in transit"
    # A client that does not trust the certificate cannot talk to it.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{endpoint}/healthz", timeout=5)


def test_the_cli_reaches_an_https_endpoint_trusting_its_ca_bundle(tls_server):
    endpoint, cert, credentials = tls_server
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith("AWS_") and key != "HSM_KMS_CONFIG"
    }
    environment.update(AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_REGION=REGION)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BINARY, "--endpoint-url", endpoint, "--profile", PROFILE, *args],
            capture_output=True, text=True, timeout=60, env=environment,
        )

    trusted = cli("--ca-bundle", str(cert), "create-key", "--description", "over TLS by the CLI")
    assert trusted.returncode == 0, trusted.stderr
    assert '"KeyId"' in trusted.stdout
    # AWS_CA_BUNDLE does the same, as for the AWS CLI.
    environment["AWS_CA_BUNDLE"] = str(cert)
    assert cli("list-keys").returncode == 0
    del environment["AWS_CA_BUNDLE"]
    # Without the bundle the server's certificate is not trusted: no call is made.
    untrusted = cli("list-keys")
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower(), untrusted.stderr


def test_plain_http_is_refused_off_loopback(server):
    port = _free_port()
    result = subprocess.run(
        [BINARY, "--config", server.config, "serve", "--listen", f"0.0.0.0:{port}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "plain HTTP is allowed only on a loopback address" in result.stderr


def _profile_value(credentials: Path, name: str) -> str:
    section = None
    for line in credentials.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == PROFILE and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key == name:
                return value
    raise KeyError(name)
