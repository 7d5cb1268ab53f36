"""The AWS CLI v1 (the venv's `aws`) against `hsm-kms serve`, configured only by the
cluster's shared-credentials file, the profile, the region and `--endpoint-url`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ACCOUNT, PROFILE, REGION

AWS = Path(sys.executable).with_name("aws")


@pytest.fixture(scope="module")
def aws(server, aws_env):
    """Runs `aws --profile hsm-kms --region ... --endpoint-url ... kms ARGS`."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AWS, "--profile", PROFILE, "--region", REGION, "--endpoint-url", server.endpoint, "kms", *args],
            env=aws_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def ok(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout) if process.stdout.strip() else {}


def text(process: subprocess.CompletedProcess) -> str:
    assert process.returncode == 0, process.stderr
    return process.stdout.strip()


def test_key_alias_file_round_trip_and_deletion(aws, tmp_path):
    key = ok(aws("create-key", "--description", "from the aws cli"))["KeyMetadata"]
    arn = key["Arn"]
    assert arn == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key['KeyId']}"
    assert ok(aws("create-alias", "--alias-name", "alias/cli-test", "--target-key-id", key["KeyId"])) == {}
    aliases = ok(aws("list-aliases", "--key-id", key["KeyId"]))["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/cli-test"]
    assert any(k["KeyId"] == key["KeyId"] for k in ok(aws("list-keys"))["Keys"])

    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(3000) + b"\x00\n\r\xff")
    # The CLI prints blobs in base64; decoding them into files is what its docs show.
    sealed = tmp_path / "secret.enc"
    sealed.write_bytes(
        base64.b64decode(
            text(
                aws(
                    "encrypt", "--key-id", "alias/cli-test", "--plaintext", f"fileb://{secret}",
                    "--encryption-context", "purpose=test",
                    "--output", "text", "--query", "CiphertextBlob",
                )
            )
        )
    )
    opened = tmp_path / "secret.out"
    opened.write_bytes(
        base64.b64decode(
            text(
                aws(
                    "decrypt", "--ciphertext-blob", f"fileb://{sealed}",
                    "--encryption-context", "purpose=test",
                    "--output", "text", "--query", "Plaintext",
                )
            )
        )
    )
    assert opened.read_bytes() == secret.read_bytes()
    decrypted = ok(
        aws("decrypt", "--ciphertext-blob", f"fileb://{sealed}", "--encryption-context", "purpose=test")
    )
    assert decrypted["KeyId"] == arn

    scheduled = ok(aws("schedule-key-deletion", "--key-id", key["KeyId"], "--pending-window-in-days", "7"))
    assert scheduled["KeyId"] == arn
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7

    refused = aws("encrypt", "--key-id", "alias/cli-test", "--plaintext", f"fileb://{secret}")
    assert refused.returncode == 255
    assert (
        f"An error occurred (KMSInvalidStateException) when calling the Encrypt operation: "
        f"{arn} is pending deletion." in refused.stderr
    )


def test_errors_exit_non_zero_with_the_aws_message(aws):
    missing = aws("describe-key", "--key-id", "alias/cli-never-created")
    assert missing.returncode == 255
    assert (
        "An error occurred (NotFoundException) when calling the DescribeKey operation: "
        f"Alias arn:aws:kms:{REGION}:{ACCOUNT}:alias/cli-never-created is not found."
    ) in missing.stderr

    key = ok(aws("create-key"))["KeyMetadata"]
    assert ok(aws("disable-key", "--key-id", key["KeyId"])) == {}
    disabled = aws("generate-data-key", "--key-id", key["KeyId"], "--key-spec", "AES_256")
    assert disabled.returncode == 255
    assert (
        "An error occurred (DisabledException) when calling the GenerateDataKey operation: "
        f"{key['Arn']} is disabled."
    ) in disabled.stderr


def test_wrong_secret_is_refused(aws, server, aws_env, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[{PROFILE}]\naws_access_key_id = {server.access_key}\naws_secret_access_key = wrong\n"
    )
    refused = subprocess.run(
        [AWS, "--profile", PROFILE, "--region", REGION, "--endpoint-url", server.endpoint, "kms", "list-keys"],
        env={**aws_env, "AWS_SHARED_CREDENTIALS_FILE": str(credentials)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 255
    assert "An error occurred (InvalidSignatureException) when calling the ListKeys operation" in refused.stderr


def test_put_and_get_key_policy_round_trip_through_files(aws, tmp_path):
    key_id = ok(aws("create-key"))["KeyMetadata"]["KeyId"]
    document = {
        "Version": "2012-10-17",
        "Id": "authz-round-trip",
        "Statement": [
            {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "NoDeletion", "Effect": "Deny", "Principal": {"AWS": "*"},
             "Action": "kms:ScheduleKeyDeletion", "Resource": "*"},
        ],
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document, indent=2))
    ok(aws("put-key-policy", "--key-id", key_id, "--policy-name", "default", "--policy", f"file://{path}"))
    returned = text(aws("get-key-policy", "--key-id", key_id, "--policy-name", "default",
                        "--query", "Policy", "--output", "text"))
    assert json.loads(returned) == document
    assert returned == path.read_text()
    assert ok(aws("list-key-policies", "--key-id", key_id))["PolicyNames"] == ["default"]
    denied = aws("schedule-key-deletion", "--key-id", key_id)
    assert denied.returncode != 0
    assert "AccessDeniedException" in denied.stderr
    assert "with an explicit deny in a resource-based policy" in denied.stderr


def test_grant_verbs(aws):
    key_id = ok(aws("create-key"))["KeyMetadata"]["KeyId"]
    grantee = f"arn:aws:iam::{ACCOUNT}:user/batch"
    created = ok(aws("create-grant", "--key-id", key_id, "--grantee-principal", grantee,
                     "--retiring-principal", f"arn:aws:iam::{ACCOUNT}:user/hsm-kms-dev",
                     "--operations", "Encrypt", "Decrypt",
                     "--constraints", "EncryptionContextSubset={purpose=backup}", "--name", "nightly"))
    listed = ok(aws("list-grants", "--key-id", key_id))["Grants"]
    assert [g["GrantId"] for g in listed] == [created["GrantId"]]
    assert listed[0]["Constraints"] == {"EncryptionContextSubset": {"purpose": "backup"}}
    assert listed[0]["Name"] == "nightly"
    ok(aws("retire-grant", "--grant-token", created["GrantToken"]))
    assert ok(aws("list-grants", "--key-id", key_id))["Grants"] == []
    second = ok(aws("create-grant", "--key-id", key_id, "--grantee-principal", grantee, "--operations", "Encrypt"))
    ok(aws("revoke-grant", "--key-id", key_id, "--grant-id", second["GrantId"]))
    refused = aws("revoke-grant", "--key-id", key_id, "--grant-id", second["GrantId"])
    assert refused.returncode != 0 and "NotFoundException" in refused.stderr


def test_import_key_material_wrapped_with_the_openssl_recipe(aws, tmp_path):
    """`aws kms get-parameters-for-import` and `import-key-material`, the material wrapped by
    openssl as AWS's docs instruct: AES-256 material that then encrypts what an independent
    AES-GCM of it gives, and RSA and ECC private keys (DER PKCS #8 from `openssl pkcs8
    -topk8`) whose KMS signatures openssl verifies with the original key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_import import CONTEXT, canonical_context, wrap_openssl

    def import_material(key_id: str, algorithm: str, wrapping_spec: str, material: bytes) -> None:
        params = ok(
            aws(
                "get-parameters-for-import", "--key-id", key_id,
                "--wrapping-algorithm", algorithm, "--wrapping-key-spec", wrapping_spec,
            )
        )
        (tmp_path / "ImportToken.bin").write_bytes(base64.b64decode(params["ImportToken"]))
        wrapped = wrap_openssl(base64.b64decode(params["PublicKey"]), algorithm, material, tmp_path)
        (tmp_path / "EncryptedKeyMaterial.bin").write_bytes(wrapped)
        assert ok(
            aws(
                "import-key-material", "--key-id", key_id,
                "--encrypted-key-material", f"fileb://{tmp_path / 'EncryptedKeyMaterial.bin'}",
                "--import-token", f"fileb://{tmp_path / 'ImportToken.bin'}",
                "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE",
            )
        ) == {}
        state = ok(aws("describe-key", "--key-id", key_id))["KeyMetadata"]["KeyState"]
        assert state == "Enabled"

    # Symmetric: `openssl rand` material; the ciphertext is an AES-GCM under exactly it.
    key_id = ok(aws("create-key", "--origin", "EXTERNAL"))["KeyMetadata"]["KeyId"]
    subprocess.run(["openssl", "rand", "-out", tmp_path / "PlaintextKeyMaterial.bin", "32"], check=True)
    material = (tmp_path / "PlaintextKeyMaterial.bin").read_bytes()
    import_material(key_id, "RSA_AES_KEY_WRAP_SHA_1", "RSA_3072", material)
    (tmp_path / "plain.txt").write_bytes(b"sealed under imported material")
    context = ",".join(f"{k}={v}" for k, v in CONTEXT.items())
    blob = base64.b64decode(
        text(
            aws(
                "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plain.txt'}",
                "--encryption-context", context, "--output", "text", "--query", "CiphertextBlob",
            )
        )
    )
    header, iv = blob[:23], blob[23:35]
    independent = AESGCM(material).encrypt(
        iv, b"sealed under imported material", header + canonical_context(CONTEXT)
    )
    assert blob == header + iv + independent

    # Asymmetric: a private key made and converted by openssl, one spec per wrapping kind.
    for spec, genpkey, algorithm, signing, digest in [
        ("RSA_2048", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
         "RSA_AES_KEY_WRAP_SHA_1", "RSASSA_PKCS1_V1_5_SHA_256", "-sha256"),
        ("ECC_NIST_P256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
         "RSAES_OAEP_SHA_1", "ECDSA_SHA_256", "-sha256"),
    ]:
        key_id = ok(
            aws("create-key", "--origin", "EXTERNAL", "--key-spec", spec, "--key-usage", "SIGN_VERIFY")
        )["KeyMetadata"]["KeyId"]
        pem, der = tmp_path / f"{spec}.pem", tmp_path / f"{spec}.der"
        subprocess.run(["openssl", "genpkey", *genpkey, "-out", pem], check=True)
        subprocess.run(
            ["openssl", "pkcs8", "-topk8", "-inform", "PEM", "-outform", "DER", "-nocrypt",
             "-in", pem, "-out", der],
            check=True,
        )
        import_material(key_id, algorithm, "RSA_4096", der.read_bytes())
        original_public = subprocess.run(
            ["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout
        public = ok(aws("get-public-key", "--key-id", key_id))["PublicKey"]
        assert base64.b64decode(public) == original_public, spec
        message = tmp_path / "message.bin"
        message.write_bytes(f"signed by an imported {spec} key".encode())
        signature = tmp_path / "signature.bin"
        signature.write_bytes(
            base64.b64decode(
                text(
                    aws(
                        "sign", "--key-id", key_id, "--message", f"fileb://{message}",
                        "--message-type", "RAW", "--signing-algorithm", signing,
                        "--output", "text", "--query", "Signature",
                    )
                )
            )
        )
        verified = subprocess.run(
            ["openssl", "dgst", digest, "-prverify", pem, "-signature", signature, message],
            capture_output=True, text=True,
        )
        assert verified.returncode == 0, (spec, verified.stdout, verified.stderr)
