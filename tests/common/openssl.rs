//! The `openssl` command line as the independent party of the tests: it reads the public
//! keys GetPublicKey returns and verifies the signatures Sign makes.

use std::path::Path;
use std::process::Command;

use hsm_kms::keys::spec::SigningAlgorithm;

/// Writes the DER public key as PEM for openssl.
pub fn write_public_pem(dir: &Path, der: &[u8]) -> std::path::PathBuf {
    let der_path = dir.join("public.der");
    std::fs::write(&der_path, der).unwrap();
    let pem = dir.join("public.pem");
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(&der_path)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pem
}

/// `openssl dgst -verify` of `signature` over `message`, with PSS options when asked.
pub fn openssl_verifies(
    dir: &Path,
    pem: &Path,
    algorithm: SigningAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let message_path = dir.join("message");
    let signature_path = dir.join("signature");
    std::fs::write(&message_path, message).unwrap();
    std::fs::write(&signature_path, signature).unwrap();
    let digest = match algorithm.digest().output_len() {
        32 => "-sha256",
        48 => "-sha384",
        _ => "-sha512",
    };
    let mut command = Command::new("openssl");
    command.args(["dgst", digest, "-verify"]).arg(pem);
    if algorithm.as_str().starts_with("RSASSA_PSS") {
        command.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    command
        .arg("-signature")
        .arg(&signature_path)
        .arg(&message_path);
    let out = command.output().unwrap();
    out.status.success()
}
