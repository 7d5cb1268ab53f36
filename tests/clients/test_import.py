"""Imported key material with boto3 against `hsm-kms serve`: the material wrapped three
independent ways (our `hsm-kms wrap-key-material`, the openssl command line recipe AWS
documents, Python's `cryptography`), each imported, used, deleted and re-imported; a
ciphertext made before the deletion decrypts after the re-import and equals an independent
AES-GCM of the same plaintext under the material (docs/ciphertext-format.md); bad imports
answered with AWS's exceptions; the import condition keys in a key policy; and the material
never in the server's log."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from conftest import ACCOUNT, REPO, refused

DEV = f"arn:aws:iam::{ACCOUNT}:user/hsm-kms-dev"
BINARY = REPO / "target" / "debug" / "hsm-kms"
# What SoftHSM2 can open (it takes only SHA-1 for RSA-OAEP); the SHA-256 algorithms are
# refused by GetParametersForImport there (see test_sha_256_algorithms_are_refused...).
ALGORITHMS = ["RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_1"]
CONTEXT = {"purpose": "import", "Ab": "c"}


def wrap_ours(public_key: bytes, algorithm: str, material: bytes, work: Path) -> bytes:
    (work / "public.der").write_bytes(public_key)
    (work / "material.bin").write_bytes(material)
    subprocess.run(
        [
            BINARY,
            "wrap-key-material",
            "--public-key",
            f"fileb://{work / 'public.der'}",
            "--algorithm",
            algorithm,
            "--key-material",
            f"fileb://{work / 'material.bin'}",
            "--out",
            work / "wrapped.bin",
        ],
        check=True,
    )
    return (work / "wrapped.bin").read_bytes()


def wrap_openssl(public_key: bytes, algorithm: str, material: bytes, work: Path) -> bytes:
    """AWS's documented openssl recipe (`openssl pkeyutl` with OAEP options; for the two-step
    algorithms an AES-256 key from `openssl rand` and `openssl enc -id-aes256-wrap-pad`)."""
    (work / "public.der").write_bytes(public_key)
    (work / "material.bin").write_bytes(material)
    digest = "sha256" if algorithm.endswith("SHA_256") else "sha1"

    def oaep(plain: str, out: str) -> None:
        subprocess.run(
            [
                "openssl", "pkeyutl", "-encrypt", "-in", work / plain, "-out", work / out,
                "-inkey", work / "public.der", "-keyform", "DER", "-pubin",
                "-pkeyopt", "rsa_padding_mode:oaep",
                "-pkeyopt", f"rsa_oaep_md:{digest}",
                "-pkeyopt", f"rsa_mgf1_md:{digest}",
            ],
            check=True,
        )

    if algorithm.startswith("RSAES_OAEP"):
        oaep("material.bin", "wrapped.bin")
        return (work / "wrapped.bin").read_bytes()
    subprocess.run(["openssl", "rand", "-out", work / "aes.bin", "32"], check=True)
    aes_hex = (work / "aes.bin").read_bytes().hex()
    subprocess.run(
        [
            "openssl", "enc", "-id-aes256-wrap-pad", "-K", aes_hex, "-iv", "A65959A6",
            "-in", work / "material.bin", "-out", work / "kwp.bin",
        ],
        check=True,
    )
    oaep("aes.bin", "rsa.bin")
    return (work / "rsa.bin").read_bytes() + (work / "kwp.bin").read_bytes()


def wrap_cryptography(public_key: bytes, algorithm: str, material: bytes, work: Path) -> bytes:
    key = serialization.load_der_public_key(public_key)
    digest = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return key.encrypt(material, oaep)
    ephemeral = os.urandom(32)
    return key.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, material)


WRAPPERS = {"ours": wrap_ours, "openssl": wrap_openssl, "cryptography": wrap_cryptography}


def canonical_context(context: dict[str, str]) -> bytes:
    out = struct.pack(">I", len(context))
    for key in sorted(context, key=lambda k: k.encode()):
        for part in (key.encode(), context[key].encode()):
            out += struct.pack(">I", len(part)) + part
    return out


def independent_blob(material: bytes, blob: bytes, plaintext: bytes) -> bytes:
    header, iv = blob[:23], blob[23:35]
    sealed = AESGCM(material).encrypt(iv, plaintext, header + canonical_context(CONTEXT))
    return header + iv + sealed


def import_with(kms, key_id: str, wrapper: str, algorithm: str, material: bytes, work: Path, **expiry):
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048"
    )
    wrapped = WRAPPERS[wrapper](params["PublicKey"], algorithm, material, work)
    expiry = expiry or {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped, **expiry
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_material_wrapped_three_ways_imports_and_is_the_users(kms, server, tmp_path, wrapper, algorithm):
    key = kms.create_key(Origin="EXTERNAL", Description=f"{wrapper} {algorithm}")["KeyMetadata"]
    assert (key["KeyState"], key["Origin"], key["Enabled"]) == ("PendingImport", "EXTERNAL", False)
    material = os.urandom(32)

    params = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_3072"
    )
    assert params["KeyId"] == key["Arn"]
    public = serialization.load_der_public_key(params["PublicKey"])
    assert public.key_size == 3072
    lifetime = params["ParametersValidTo"].timestamp() - key["CreationDate"].timestamp()
    assert 86400 - 60 < lifetime <= 86400 + 60
    wrapped = WRAPPERS[wrapper](params["PublicKey"], algorithm, material, tmp_path)
    kms.import_key_material(
        KeyId=key["KeyId"],
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=params["ParametersValidTo"].timestamp() + 30 * 86400,
    )
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Enabled"
    assert described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert described["ValidTo"].timestamp() == pytest.approx(
        params["ParametersValidTo"].timestamp() + 30 * 86400, abs=1
    )

    plaintext = f"imported with {wrapper}, {algorithm}".encode()
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext=CONTEXT)["CiphertextBlob"]
    assert blob == independent_blob(material, blob, plaintext), "the HSMs hold other material"

    kms.delete_imported_key_material(KeyId=key["KeyId"])
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport"
    message = refused(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT), "KMSInvalidStateException")
    assert message == f"{key['Arn']} is pending import."

    # Re-imported, wrapped another way: the ciphertext from before decrypts.
    others = list(WRAPPERS)
    again = others[(others.index(wrapper) + 1) % len(others)]
    import_with(kms, key["KeyId"], again, algorithm, material, tmp_path)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == plaintext

    log = server.log.read_bytes()
    for form in (material, material.hex().encode(), base64.b64encode(material)):
        assert form not in log


def test_bad_imports_answer_aws_exceptions(kms, tmp_path):
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    other = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    material = os.urandom(32)
    params = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    foreign = kms.get_parameters_for_import(
        KeyId=other["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    good = wrap_cryptography(params["PublicKey"], "RSAES_OAEP_SHA_1", material, tmp_path)
    never = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}

    def attempt(token=params["ImportToken"], wrapped=good, **expiry):
        return lambda: kms.import_key_material(
            KeyId=key["KeyId"], ImportToken=token, EncryptedKeyMaterial=wrapped, **(expiry or never)
        )

    refused(attempt(token=foreign["ImportToken"]), "InvalidImportTokenException")
    token = params["ImportToken"]
    # Flip a bit of the last byte (replacing it with a fixed byte left it unchanged 1 time in 256).
    tampered = token[:-1] + bytes([token[-1] ^ 0x01])
    refused(attempt(token=tampered), "InvalidImportTokenException")
    elsewhere = wrap_cryptography(foreign["PublicKey"], "RSAES_OAEP_SHA_1", material, tmp_path)
    refused(attempt(wrapped=elsewhere), "InvalidCiphertextException")
    refused(attempt(wrapped=good[:-1]), "InvalidCiphertextException")
    refused(attempt(wrapped=good + b"\0"), "InvalidCiphertextException")
    short = wrap_cryptography(params["PublicKey"], "RSAES_OAEP_SHA_1", material[:16], tmp_path)
    refused(attempt(wrapped=short), "IncorrectKeyMaterialException")
    refused(attempt(ExpirationModel="KEY_MATERIAL_EXPIRES"), "ValidationException")
    refused(attempt(ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", ValidTo=4102444800), "ValidationException")
    refused(attempt(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=1000000000), "ValidationException")
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport"

    # The right material still imports with the same token; then other material is refused.
    attempt()()
    later = kms.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    different = wrap_cryptography(later["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32), tmp_path)
    refused(attempt(token=later["ImportToken"], wrapped=different), "IncorrectKeyMaterialException")

    generated = kms.create_key()["KeyMetadata"]
    message = refused(
        lambda: kms.get_parameters_for_import(
            KeyId=generated["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
        ),
        "UnsupportedOperationException",
    )
    assert message == f"{generated['Arn']} origin is AWS_KMS which is not valid for this operation."
    refused(lambda: kms.delete_imported_key_material(KeyId=generated["KeyId"]), "UnsupportedOperationException")


def test_sha_256_algorithms_are_refused_where_the_hsms_cannot_open_them(kms):
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    for algorithm in ("RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"):
        message = refused(
            lambda: kms.get_parameters_for_import(
                KeyId=key["KeyId"], WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048"
            ),
            "UnsupportedOperationException",
        )
        assert algorithm in message


def test_import_condition_keys_in_a_key_policy(kms, tmp_path):
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": DEV}, "Action": "kms:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Principal": {"AWS": DEV},
                "Action": "kms:GetParametersForImport",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"kms:WrappingKeySpec": "RSA_4096"}},
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": DEV},
                "Action": "kms:GetParametersForImport",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:WrappingAlgorithm": "RSAES_OAEP_SHA_1"}},
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": DEV},
                "Action": "kms:ImportKeyMaterial",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}},
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": DEV},
                "Action": "kms:ImportKeyMaterial",
                "Resource": "*",
                "Condition": {"NumericGreaterThan": {"kms:ValidTo": str(int(time.time()) + 2 * 86400)}},
            },
        ],
    }
    key = kms.create_key(Origin="EXTERNAL", Policy=json.dumps(policy))["KeyMetadata"]
    get = lambda algorithm, spec: kms.get_parameters_for_import(  # noqa: E731
        KeyId=key["KeyId"], WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    refused(lambda: get("RSA_AES_KEY_WRAP_SHA_1", "RSA_2048"), "AccessDeniedException")
    refused(lambda: get("RSAES_OAEP_SHA_1", "RSA_4096"), "AccessDeniedException")
    params = get("RSA_AES_KEY_WRAP_SHA_1", "RSA_4096")
    material = os.urandom(32)
    wrapped = wrap_openssl(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_1", material, tmp_path)

    def attempt(**expiry):
        return lambda: kms.import_key_material(
            KeyId=key["KeyId"], ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped, **expiry
        )

    refused(attempt(ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE"), "AccessDeniedException")
    refused(attempt(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=time.time() + 30 * 86400), "AccessDeniedException")
    valid_to = time.time() + 86400
    attempt(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)()
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
