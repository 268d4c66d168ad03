//! Every `scenarios/*.toml` as its own test (libtest-mimic): `cargo test` lists them by name
//! and `cargo test -- NAME` filters them. A failing scenario prints its new, grown or vanished
//! clusters with an example diff, and writes a pending baseline next to the baseline for
//! review; `REPLAY_BLESS=1 cargo test` accepts instead. CI never updates a baseline by itself:
//! it does not set REPLAY_BLESS.

use std::path::{Path, PathBuf};

use harness::scenario::{self, Scenario};
use libtest_mimic::{Arguments, Failed, Trial};

fn run_one(path: &Path) -> Result<(), Failed> {
    let s = Scenario::load(path).map_err(|e| e.to_string())?;
    let checked = s.run(&replay_cli::natives::registry()).map_err(|e| e.to_string())?;
    let bless = std::env::var_os("REPLAY_BLESS").is_some_and(|v| v == "1");
    let Some(baseline) = s.baseline_path() else {
        return if checked.passed() { Ok(()) } else { Err(checked.explain(&s).into()) };
    };
    let pending = scenario::pending_path(baseline);
    if checked.passed() {
        let _ = std::fs::remove_file(&pending);
        return Ok(());
    }
    let old = scenario::read_baseline(baseline).map_err(|e| e.to_string())?;
    let proposed = scenario::baseline_for(&checked.report, &old);
    let header = format!(
        "# Accepted clusters of scenario {} ({} vs {}). Each `note` says why it is accepted.\n\n",
        s.name, checked.report.a.name, checked.report.b.name
    );
    if bless {
        scenario::write_baseline(baseline, &proposed, &header).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&pending);
        return Ok(());
    }
    scenario::write_baseline(&pending, &proposed, &header).map_err(|e| e.to_string())?;
    Err(format!(
        "{}a pending baseline is in {}: review it (`replay review`), or accept every change with \
         `REPLAY_BLESS=1 cargo test`",
        checked.explain(&s),
        pending.display()
    )
    .into())
}

fn main() {
    let args = Arguments::from_args();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let files = Scenario::discover(&dir).expect("the scenarios directory");
    let trials = files
        .into_iter()
        .map(|path| {
            let name = match Scenario::load(&path) {
                Ok(s) => s.name,
                Err(_) => path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
            };
            Trial::test(name, move || run_one(&path))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
