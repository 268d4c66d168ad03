/*!
The `replay` command line: parsing, printing and exit codes. The work itself lives in the
`corpora`, `recorders` and `harness` crates; this crate only calls into them.
*/

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod corpus_cmd;
mod diff_cmd;
pub mod exit_codes;
mod matrix_cmd;
pub mod natives;
mod output;
mod record_cmd;
mod review_cmd;
mod run_cmd;

use output::Ui;

/// Record real traffic, replay it against two or more builds, and diff what they answer.
#[derive(Debug, Parser)]
#[command(name = "replay", version, about, max_term_width = 100)]
pub struct Cli {
    /// The target definitions (default: replay.toml in the working directory).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print no progress bars and no summaries on stderr (warnings and errors still show).
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the targets of replay.toml and check that each loads (runs `build` steps).
    Targets,
    /// Run every case of a corpus through one target and save the observations.
    Run(run_cmd::RunArgs),
    /// Run every case through two targets (or saved runs), diff the answers, cluster the
    /// differences. Exit 0 same, 1 different, 2 error.
    Diff(diff_cmd::DiffArgs),
    /// Run one case through one target (or read it from a saved run) and print the observation.
    Show(diff_cmd::ShowArgs),
    /// The nightly matrix: every target run once, each diffed against a reference (or every
    /// pair), and what changed since the previous run. Exit 1 only on new or grown clusters.
    Matrix(matrix_cmd::MatrixArgs),
    /// Play back the HTTP exchanges of a corpus as the recorded upstream would answer; a
    /// request that matches nothing gets a 502 naming the closest recorded one.
    Serve(diff_cmd::ServeArgs),
    /// Review pending scenario baselines: accept or reject each new, grown or vanished cluster.
    Review(review_cmd::ReviewArgs),
    /// Accept pending scenario baselines as they are (all, or the named scenarios).
    Accept(review_cmd::AcceptArgs),
    /// Reports: merge shard reports.
    Report {
        /// What to do.
        #[command(subcommand)]
        action: ReportAction,
    },
    /// Noise: what differs between two runs of the same build.
    Noise {
        /// What to do.
        #[command(subcommand)]
        action: NoiseAction,
    },
    /// Inspect, check, export, import and compact a corpus.
    Corpus {
        /// The corpus directory.
        #[arg(long, short = 'c', env = "REPLAY_CORPUS", value_name = "DIR", global = true)]
        corpus: Option<PathBuf>,

        /// What to do with it.
        #[command(subcommand)]
        action: corpus_cmd::CorpusAction,
    },
    /// Record traffic into a corpus.
    Record {
        /// Which recorder.
        #[command(subcommand)]
        action: record_cmd::RecordAction,
    },
}

/// `replay report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportAction {
    /// Join the JSON reports (or matrix.json files) of `--shard K/N` runs into exactly what
    /// one unsharded run gives.
    Merge(diff_cmd::MergeArgs),
}

/// `replay noise ...`.
#[derive(Debug, Subcommand)]
pub enum NoiseAction {
    /// Run targets twice and write the paths that differed as proposed ignore rules.
    Learn(diff_cmd::NoiseLearnArgs),
}

/// Runs the command line and returns the process exit code (see [`exit_codes`]).
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit_codes::INPUT_ERROR } else { exit_codes::OK };
        }
    };
    let ui = Ui::new(cli.quiet);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli, &ui)));
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => report_error(&err),
        Err(_) => {
            eprintln!("error: internal failure (a bug in replay); please report it with the command line");
            exit_codes::INTERNAL
        }
    }
}

fn run(cli: Cli, ui: &Ui) -> anyhow::Result<i32> {
    match cli.command {
        Command::Corpus { corpus, action } => corpus_cmd::run(corpus, cli.config.as_deref(), action, ui),
        Command::Record { action } => record_cmd::run(cli.config.as_deref(), action, ui),
        Command::Targets => run_cmd::targets(cli.config.as_deref(), ui),
        Command::Run(args) => run_cmd::run(cli.config.as_deref(), args, ui),
        Command::Diff(args) => diff_cmd::diff(cli.config.as_deref(), args, ui),
        Command::Show(args) => diff_cmd::show(cli.config.as_deref(), args, ui),
        Command::Report { action: ReportAction::Merge(args) } => diff_cmd::merge(args, ui),
        Command::Review(args) => review_cmd::review(args, ui),
        Command::Serve(args) => diff_cmd::serve(cli.config.as_deref(), args, ui),
        Command::Matrix(args) => matrix_cmd::matrix(cli.config.as_deref(), args, ui),
        Command::Accept(args) => review_cmd::accept(args, ui),
        Command::Noise { action: NoiseAction::Learn(args) } => {
            diff_cmd::noise_learn(cli.config.as_deref(), args, ui)
        }
    }
}

/// Prints an error with its causes, the way ripgrep does, and picks the exit code. A broken
/// pipe (`replay ... | head`) is not an error.
fn report_error(err: &anyhow::Error) -> i32 {
    let broken_pipe = err
        .chain()
        .any(|c| c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe));
    if broken_pipe {
        return exit_codes::OK;
    }
    let mut stderr = io::stderr().lock();
    let _ = write!(stderr, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = write!(stderr, ": {cause}");
    }
    let _ = writeln!(stderr);
    if err.chain().any(|c| c.is::<exit_codes::Internal>()) {
        exit_codes::INTERNAL
    } else {
        exit_codes::INPUT_ERROR
    }
}

/// Whether progress bars may be drawn: only when stdout is a terminal (so that piped or
/// redirected output never carries them) and not `--quiet`.
pub(crate) fn progress_allowed(quiet: bool) -> bool {
    !quiet && io::stdout().is_terminal() && io::stderr().is_terminal()
}
