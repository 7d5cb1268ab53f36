//! The `hsm-kms` binary.

/// The server allocates and frees small buffers on every request from several threads, which
/// mimalloc's per-thread heaps serve with less upkeep than glibc malloc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hsm_kms::cli::main()
}
