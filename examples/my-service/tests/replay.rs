//! The scenarios of this crate, as `cargo test` tests: register the in-process build as a
//! native target, then run every `scenarios/*.toml` (one test each, filterable by name).

use std::path::PathBuf;
use std::sync::Arc;

use corpora::{Case, CaseData};
use harness::scenario::Scenario;
use harness::{FnTarget, Outcome, Registry, Target};
use libtest_mimic::{Arguments, Trial};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("my-service", |_env| {
        let t = FnTarget(|case: &Case| match case.data() {
            CaseData::Message(m) => match my_service::handle(m.input.as_bytes()) {
                Ok(out) => Outcome::bytes("application/json", out),
                Err(e) => Outcome::error(e),
            },
            _ => Outcome::Unsupported { reason: "my-service handles editor contexts only".into() },
        });
        Ok(Arc::new(t) as Arc<dyn Target>)
    });
    r
}

fn main() {
    let args = Arguments::from_args();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let trials = Scenario::discover(&dir)
        .expect("scenarios")
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            Trial::test(name, move || {
                let s = Scenario::load(&path).map_err(|e| e.to_string())?;
                let checked = s.run(&registry()).map_err(|e| e.to_string())?;
                if checked.report.cases == 0 {
                    return Err("the scenario compared no case".into());
                }
                if checked.passed() { Ok(()) } else { Err(checked.explain(&s).into()) }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
