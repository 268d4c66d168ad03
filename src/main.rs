//! The `replay` binary: parses the command line and hands over to [`replay_cli::main`].
// The recorder hands every case from the parsing thread to the corpus-writer thread, which
// frees it; glibc malloc spends a sixth of the run on those cross-thread frees, mimalloc does not.
// mimalloc's v2 branch (the `v2` feature), not v3: v3 keeps freed pages for a second before it
// returns them (purge delay 1000 ms against v2's 10 ms), which put `record pcap`'s peak RSS on
// big.pcap at 57-66 MiB against v2's 43-45 MiB (the bound is 64 MiB), at the same speed.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(replay_cli::main());
}
