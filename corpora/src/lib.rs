/*!
The case model and the durable on-disk corpus of `replay`.

A **case** ([`Case`]) is one recorded unit of input and, where known, its recorded output: an
HTTP exchange, a packet or a message. Its id ([`CaseId`]) is a hash of its input, so the same
input recorded twice is one case.

A **corpus** is a directory of append-only segment files of MessagePack records, each framed with
its length and a CRC32C, plus an index and a manifest. [`CorpusWriter`] appends (one writer at a
time, crash-safe, deduplicating by id); [`Corpus`] streams cases in constant memory or fetches one
by id. Damage is never fatal: a torn tail is truncated, a corrupt record is skipped, and each is
reported as a [`Problem`] that names the file and the offset. The format is specified in
`docs/corpus-format.md`.

```
use corpora::{Case, CaseData, Corpus, CorpusWriter, Message, WriterOptions};

let dir = tempfile::tempdir().unwrap();
let mut w = CorpusWriter::create(dir.path().join("c"), WriterOptions::default()).unwrap();
let case = Case::new(CaseData::Message(Message {
    content_type: "application/json".into(),
    input: "{\"x\":1}".into(),
    output: None,
}));
w.append(&case).unwrap();
w.close().unwrap();

let corpus = Corpus::open(dir.path().join("c")).unwrap();
let back: Vec<Case> = corpus.cases().collect::<Result<_, _>>().unwrap();
assert_eq!(back, vec![case.clone()]);
assert_eq!(corpus.get(&case.id()).unwrap(), Some(case));
```
*/

mod blob;
pub mod body;
mod case;
mod error;
pub mod frame;
mod id;
pub mod index;
pub mod jsonl;
mod keys;
mod manifest;
mod store;
pub mod value;

pub use blob::Blob;
pub use case::{
    Case, CaseData, CaseKind, ChunkMark, Flag, FlowKey, Header, HttpExchange, HttpRequest, HttpResponse,
    Message, Name, Packet, RecordedOutput, Source,
};
pub use error::{CorpusError, Problem};
pub use id::{CaseId, ID_LEN, ParseIdError};
pub use manifest::{Counts, FORMAT_NAME, Manifest};
pub use store::{
    Appended, CONTENT_CASES, Cases, CompactStats, Corpus, CorpusWriter, INDEX_FILE, IndexStatus, LOCK_FILE,
    LOOKUP_BLOCK, Lookup, MANIFEST_FILE, RecordItem, Records, SEGMENTS_DIR, SegmentFile, VerifyReport,
    WriterOptions, kind_name,
};

/// RFC 3339 UTC with milliseconds, from nanoseconds since the Unix epoch.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}
