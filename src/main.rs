//! The `replay` binary: parses the command line and hands over to [`replay_cli::main`].
// The recorder hands every case from the parsing thread to the corpus-writer thread, which
// frees it; glibc malloc spends a sixth of the run on those cross-thread frees, mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(replay_cli::main());
}
