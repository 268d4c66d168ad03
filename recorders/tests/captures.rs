//! The recorder over real captures from two public test suites (`../shared/captures`), checked
//! against what `tshark -Y http` reports for the same files (`tests/tshark/*.txt`, made by
//! `tests/tshark/generate.sh`). Every difference is listed below with its reason.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use corpora::{CaseData, Corpus, CorpusWriter, Flag, WriterOptions};
use recorders::pcap::{Options, Recorder, Stats};

/// Captures where we and tshark differ on purpose: `(file, reason, requests only we see,
/// requests only tshark sees, whether the request counts still agree)`, as
/// "METHOD TARGET STATUS" lines.
type Explained = (&'static str, &'static str, &'static [&'static str], &'static [&'static str], bool);
const EXPLAINED: &[Explained] = &[
    (
        "http_http-single-conn-22.pcap",
        "HTTP on port 22: tshark picks the dissector by port (SSH) and sees no HTTP; we detect HTTP by \
         content on any port",
        &["GET / 200"],
        &[],
        false,
    ),
    (
        "http_1000-requests-one-dropped-response.pcap",
        "1000 byte-identical requests are one case (a case is its input); the one whose response was \
         dropped is counted in requests_without_response, but its case is the answered duplicate",
        &[],
        &["GET / -"],
        true,
    ),
];

fn captures_dir() -> Option<PathBuf> {
    match std::env::var_os("REPLAY_CAPTURES") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!(
                "NOT RUN: the real-capture tests need REPLAY_CAPTURES (set by .ci/run to ../shared/captures)"
            );
            None
        }
    }
}

fn record(path: &Path) -> (Stats, Vec<(String, Vec<Flag>)>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let w = CorpusWriter::create(&dir, WriterOptions { sync_interval: None, ..WriterOptions::default() })
        .unwrap();
    let mut r = Recorder::new(w, Options::default());
    r.read(Box::new(File::open(path).unwrap()), &path.display().to_string()).unwrap();
    let (w, stats) = r.finish().unwrap();
    w.close().unwrap();
    let mut http = Vec::new();
    for case in Corpus::open(&dir).unwrap().cases() {
        let case = case.unwrap();
        if let CaseData::Http(x) = case.data() {
            let status = x.response.as_ref().map_or("-".to_string(), |r| r.status.to_string());
            http.push((format!("{} {} {status}", x.request.method, x.request.target), case.flags.clone()));
        }
    }
    (stats, http)
}

#[test]
fn real_captures_match_tshark() {
    let Some(dir) = captures_dir() else { return };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tshark");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let fixture = entry.unwrap().path();
        let Some(name) = fixture.file_name().unwrap().to_str().unwrap().strip_suffix(".txt") else {
            continue;
        };
        let capture = ["zeek", "suricata"].iter().map(|d| dir.join(d).join(name)).find(|p| p.exists());
        let Some(capture) = capture else {
            failures.push(format!("{name}: capture missing from {}", dir.display()));
            continue;
        };
        let text = std::fs::read_to_string(&fixture).unwrap();
        let tshark: Vec<&str> = text.lines().collect();
        let (stats, ours) = record(&capture);
        assert!(stats.errors.is_empty() || name == "tcp_truncated-header.pcap", "{name}: {:?}", stats.errors);
        // Every packet is accounted for exactly once.
        let d = &stats.disposition;
        assert_eq!(
            d.http + d.packet_cases + d.duplicate_packets + d.not_kept,
            stats.packets,
            "{name}: {d:?}"
        );

        // The one general difference: when a response has a hole in it, tshark's reassembly gives
        // the response up ("METHOD TARGET -"), while we keep it with the bytes we have, flagged
        // tcp_gap with the count missing (http_entity_gap, http-gap-simple, http_bro.org).
        let mut gap_answered = 0;
        let ours: Vec<String> = ours
            .iter()
            .map(|(line, flags)| {
                let has_gap = flags.iter().any(|f| matches!(f, Flag::TcpGap { .. }));
                let unanswered = format!("{} -", line.rsplit_once(' ').unwrap().0);
                if has_gap
                    && !line.ends_with(" -")
                    && tshark.contains(&unanswered.as_str())
                    && !tshark.contains(&line.as_str())
                {
                    gap_answered += 1;
                    unanswered
                } else {
                    line.clone()
                }
            })
            .collect();
        let ours_set: BTreeSet<&str> = ours.iter().map(String::as_str).collect();
        let theirs_set: BTreeSet<&str> = tshark.iter().copied().collect();
        let (only_ours, only_theirs): (Vec<&str>, Vec<&str>) = (
            ours_set.difference(&theirs_set).copied().collect(),
            theirs_set.difference(&ours_set).copied().collect(),
        );
        let explained = EXPLAINED.iter().find(|e| e.0 == name);
        let (want_ours, want_theirs): (Vec<&str>, Vec<&str>) =
            explained.map_or((vec![], vec![]), |e| (e.2.to_vec(), e.3.to_vec()));
        let counts_agree = explained.is_none_or(|e| e.4);
        if only_ours != want_ours || only_theirs != want_theirs {
            failures.push(format!("{name}: only we see {only_ours:?}; only tshark sees {only_theirs:?}"));
        }
        // Identical requests are one case (same input): the counts still add up.
        if counts_agree {
            assert_eq!(
                (stats.exchanges + stats.duplicate_exchanges) as usize,
                tshark.len(),
                "{name}: exchanges seen (new + already present) vs tshark's requests"
            );
            let unanswered = tshark.iter().filter(|l| l.ends_with(" -")).count();
            assert_eq!(
                stats.requests_without_response as usize + gap_answered,
                unanswered,
                "{name}: requests without response"
            );
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 30, "only {checked} captures checked");
}

#[test]
fn lost_bytes_are_flagged_not_papered_over() {
    let Some(dir) = captures_dir() else { return };
    for (name, expect_gap) in [
        ("zeek/http_entity_gap.pcap", true),
        ("suricata/http-gap-simple_input.pcap", true),
        ("zeek/http_zero-length-bodies-with-drops.pcap", true),
        ("zeek/http_get.pcap", false),
    ] {
        let (stats, http) = record(&dir.join(name));
        let flagged: u64 = http
            .iter()
            .flat_map(|(_, f)| f)
            .filter_map(|f| if let Flag::TcpGap { bytes_missing } = f { Some(*bytes_missing) } else { None })
            .sum();
        assert_eq!(flagged > 0, expect_gap, "{name}: {http:?}");
        assert_eq!(stats.tcp.gaps > 0, expect_gap, "{name}");
        if expect_gap {
            assert!(stats.tcp.bytes_missing >= flagged, "{name}: {} < {flagged}", stats.tcp.bytes_missing);
        }
    }
    // The end of the stream was never captured: the request is kept, flagged.
    let (stats, http) = record(&dir.join("zeek/tcp_miss_end_data.pcap"));
    assert_eq!(stats.requests_without_response, 1);
    assert!(http[0].1.contains(&Flag::NoResponse), "{http:?}");
    // A stream whose SYN is not in the capture is still reassembled.
    let (stats, http) = record(&dir.join("zeek/http_get_nosyn.pcap"));
    assert!(stats.tcp.without_syn >= 1);
    assert_eq!(http.len(), 1);
}

#[test]
fn pcapng_and_upgrade() {
    let Some(dir) = captures_dir() else { return };
    let (stats, http) = record(&dir.join("zeek/http_cooper-grill-dvwa.pcapng"));
    assert_eq!(http.len(), 3, "{http:?}");
    assert!(
        stats.first_ns.unwrap() > 1_000_000_000_000_000_000,
        "pcapng timestamps in nanoseconds since 1970"
    );
    let (stats, _) = record(&dir.join("zeek/http_docker-http-upgrade.pcap"));
    assert!(stats.connections.get("http_upgraded").copied().unwrap_or(0) >= 1, "{:?}", stats.connections);
}
