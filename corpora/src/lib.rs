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
mod manifest;
mod store;
pub mod value;

pub use blob::Blob;
pub use case::{
    Case, CaseData, CaseKind, ChunkMark, Flag, FlowKey, Header, HttpExchange, HttpRequest, HttpResponse,
    Message, Packet, RecordedOutput, Source,
};
pub use error::{CorpusError, Problem};
pub use id::{CaseId, ID_LEN, ParseIdError};
pub use manifest::{Counts, FORMAT_NAME, Manifest};
pub use store::{
    Appended, CONTENT_CASES, Cases, CompactStats, Corpus, CorpusWriter, INDEX_FILE, IndexStatus, LOCK_FILE,
    MANIFEST_FILE, RecordItem, Records, SEGMENTS_DIR, SegmentFile, VerifyReport, WriterOptions, kind_name,
};
