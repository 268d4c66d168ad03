//! The native targets this binary registers for `kind = "native"` entries: the demo.

use std::sync::Arc;

use corpora::Case;
use harness::{Input, Outcome, Registry, Target};

/// The demo system under test, in process.
pub struct Demo {
    cfg: demo::Config,
}

impl Demo {
    /// The demo with switches read from an `env` table.
    pub fn new(env: &std::collections::BTreeMap<String, String>) -> Result<Demo, String> {
        for k in env.keys() {
            if !matches!(k.as_str(), "DEMO_SERIALIZER" | "DEMO_EDGE_BUFFER") {
                return Err(format!(
                    "env key {k:?} is not a demo switch (DEMO_SERIALIZER, DEMO_EDGE_BUFFER)"
                ));
            }
        }
        Ok(Demo { cfg: demo::Config::from_lookup(|k| env.get(k).cloned())? })
    }
}

impl Target for Demo {
    fn observe(&self, case: &Case) -> Outcome {
        let input = Input::of(case);
        let kind = demo::Kind::from_byte(input.kind as u8).expect("case kinds are the demo's kinds");
        match demo::handle(
            &self.cfg,
            demo::Input { kind, content_type: &input.content_type, data: &input.data },
        ) {
            Ok(o) => Outcome::bytes(o.content_type, o.data),
            Err(message) => Outcome::Error { message },
        }
    }
}

/// Every native target of this binary.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("demo", |env| Ok(Arc::new(Demo::new(env)?) as Arc<dyn Target>));
    r
}
