//! The `replay` binary: parses the command line and hands over to [`replay_cli::main`].
fn main() {
    std::process::exit(replay_cli::main());
}
