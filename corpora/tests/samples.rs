//! The checked-in sample corpus is exactly what its checked-in generator makes.

#[allow(dead_code)]
#[path = "../examples/gen_samples.rs"]
mod gen_samples;

use std::fs;
use std::path::Path;

#[test]
fn bundled_sample_matches_its_generator() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("demo");
    gen_samples::generate(&fresh).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo");
    for file in ["segments/00000001.seg", "index.bin"] {
        let a = fs::read(bundled.join(file)).unwrap();
        let b = fs::read(fresh.join(file)).unwrap();
        assert!(
            a == b,
            "corpora/samples/demo/{file} differs from what gen_samples makes; regenerate it with \
             `cargo run -p corpora --example gen_samples -- corpora/samples/demo`"
        );
    }
    let counts = |dir: &Path| corpora::Corpus::open(dir).unwrap().manifest().counts.clone();
    assert_eq!(counts(&bundled), counts(&fresh));
    assert_eq!(counts(&bundled).records, 3360);
}
