"""Multi-Region keys through boto3 against `hsm-kms serve` on two sites: cluster `local`
serves us-east-1 and cluster `site-b` serves eu-west-1, each two SoftHSM2 members, linked by
`hsm-kms cluster link`. Every refusal AWS documents for ReplicateKey and UpdatePrimaryRegion
comes back with AWS's exception; a key of imported material takes the same material in each
Region."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import REPO, _free_port, _wait_healthy, refused

EAST = "us-east-1"
WEST = "eu-west-1"
ACCOUNT = "111122223333"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory):
    """A server over two linked sites; yields (endpoint, access key, secret key)."""
    subprocess.run(["cargo", "build", "--bin", "hsm-kms"], cwd=REPO, check=True)
    binary = REPO / "target" / "debug" / "hsm-kms"
    work = tmp_path_factory.mktemp("two-sites")
    for site in ("a", "b"):
        subprocess.run([REPO / "scripts" / "softhsm-cluster.sh", work / site, "2"], check=True)
    first = (work / "a" / "hsm-kms.toml").read_text()
    second = (work / "b" / "hsm-kms.toml").read_text()
    site_b = second[second.index("[clusters.local]"):].replace("clusters.local", "clusters.site-b")
    config = work / "two-sites.toml"
    config.write_text(
        first.replace(f'region = "{EAST}"\n', f'region = "{EAST}"\nregions = ["{EAST}", "{WEST}"]\n', 1)
        + "\n" + site_b
        + f'\n[service.region_clusters]\n{WEST} = "site-b"\n'
    )
    for args in (["cluster", "init"], ["cluster", "init", "--cluster", "site-b"],
                 ["cluster", "link", "local", "site-b"]):
        subprocess.run([binary, "--config", config, *args], check=True)
    parser = configparser.ConfigParser()
    parser.read(work / "a" / "credentials")
    profile = parser["hsm-kms"]

    url = f"http://127.0.0.1:{_free_port()}"
    log = work / "serve.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, "--config", config, "serve", "--listen", url.removeprefix("http://")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(url, process, log)
        yield url, profile["aws_access_key_id"], profile["aws_secret_access_key"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()


def client(endpoint, region: str):
    """A KMS client of its own session (boto3's process-wide default session stays for the
    other modules' fixtures, which set the environment it reads)."""
    url, access_key, secret_key = endpoint
    return boto3.session.Session().client(
        "kms",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def replicated(endpoint) -> str:
    """A multi-Region primary key in us-east-1 with a replica in eu-west-1."""
    east = client(endpoint, EAST)
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST, Description="west")
    return key_id


def test_a_replica_decrypts_what_the_primary_encrypted_and_back(endpoint, replicated):
    east, west = client(endpoint, EAST), client(endpoint, WEST)
    metadata = west.describe_key(KeyId=replicated)["KeyMetadata"]
    assert metadata["MultiRegion"] is True
    assert metadata["Arn"] == f"arn:aws:kms:{WEST}:{ACCOUNT}:key/{replicated}"
    configuration = metadata["MultiRegionConfiguration"]
    assert configuration["MultiRegionKeyType"] == "REPLICA"
    assert configuration["PrimaryKey"] == {
        "Arn": f"arn:aws:kms:{EAST}:{ACCOUNT}:key/{replicated}",
        "Region": EAST,
    }
    blob = east.encrypt(KeyId=replicated, Plaintext=b"east")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"east"
    answer = west.decrypt(CiphertextBlob=blob, KeyId=replicated)
    assert answer["KeyId"] == metadata["Arn"]
    blob = west.encrypt(KeyId=replicated, Plaintext=b"west")["CiphertextBlob"]
    assert east.decrypt(CiphertextBlob=blob)["Plaintext"] == b"west"


def test_replicating_a_single_region_key_is_unsupported(endpoint):
    east = client(endpoint, EAST)
    key_id = east.create_key()["KeyMetadata"]["KeyId"]
    message = refused(lambda: east.replicate_key(KeyId=key_id, ReplicaRegion=WEST),
                      "UnsupportedOperationException")
    assert "is not a multi-Region key" in message


def test_replicating_into_its_own_or_a_replicated_region_already_exists(endpoint, replicated):
    east = client(endpoint, EAST)
    for region in (EAST, WEST):
        message = refused(lambda: east.replicate_key(KeyId=replicated, ReplicaRegion=region),
                          "AlreadyExistsException")
        assert f"arn:aws:kms:{region}:{ACCOUNT}:key/{replicated}" in message


def test_replicating_into_a_region_not_served_is_unsupported(endpoint, replicated):
    east = client(endpoint, EAST)
    refused(lambda: east.replicate_key(KeyId=replicated, ReplicaRegion="ap-south-1"),
            "UnsupportedOperationException")
    message = refused(lambda: east.replicate_key(KeyId=replicated, ReplicaRegion="moon"),
                      "ValidationException")
    assert "replicaRegion" in message


def test_a_replica_cannot_be_replicated(endpoint, replicated):
    west = client(endpoint, WEST)
    message = refused(lambda: west.replicate_key(KeyId=replicated, ReplicaRegion="eu-north-1"),
                      "UnsupportedOperationException")
    assert "is not a multi-Region primary key" in message


def test_update_primary_region_needs_a_replica_there(endpoint, replicated):
    east = client(endpoint, EAST)
    message = refused(
        lambda: east.update_primary_region(KeyId=replicated, PrimaryRegion="ap-south-1"),
        "NotFoundException",
    )
    assert message == f"Key 'arn:aws:kms:ap-south-1:{ACCOUNT}:key/{replicated}' does not exist"


def test_a_primary_with_replicas_waits_in_pending_replica_deletion(endpoint):
    east, west = client(endpoint, EAST), client(endpoint, WEST)
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    answer = east.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert answer["KeyState"] == "PendingReplicaDeletion"
    assert "DeletionDate" not in answer
    metadata = east.describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["PendingDeletionWindowInDays"] == 7
    refused(lambda: east.encrypt(KeyId=key_id, Plaintext=b"x"), "KMSInvalidStateException")
    assert west.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"
    east.cancel_key_deletion(KeyId=key_id)
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def wrap(public_key: bytes, material: bytes) -> bytes:
    """The user's side of an import: RSAES_OAEP_SHA_1 under the wrapping public key."""
    key = serialization.load_der_public_key(public_key)
    digest = hashes.SHA1()
    return key.encrypt(material, padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None))


def import_material(kms, key_id: str, material: bytes) -> None:
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


def test_an_imported_multi_region_key_takes_the_same_material_in_each_region(endpoint):
    east, west = client(endpoint, EAST), client(endpoint, WEST)
    key_id = east.create_key(MultiRegion=True, Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    replica = east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)["ReplicaKeyMetadata"]
    assert replica["KeyState"] == "PendingImport"
    assert replica["Origin"] == "EXTERNAL"
    material = os.urandom(32)
    import_material(east, key_id, material)
    blob = east.encrypt(KeyId=key_id, Plaintext=b"east")["CiphertextBlob"]
    refused(lambda: import_material(west, key_id, os.urandom(32)), "IncorrectKeyMaterialException")
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    import_material(west, key_id, material)
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"east"
