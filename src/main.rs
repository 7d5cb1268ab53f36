//! The `hsm-kms` binary.

fn main() -> std::process::ExitCode {
    hsm_kms::cli::main()
}
