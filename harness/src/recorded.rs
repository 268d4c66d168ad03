//! The `recorded` target: what production answered, as stored in the corpus.

use corpora::{Case, CaseData, body};

use crate::observation::{Outcome, Output};
use crate::target::Target;

/// Answers each case with its recorded output.
pub struct Recorded;

impl Target for Recorded {
    fn observe(&self, case: &Case) -> Outcome {
        match case.data() {
            CaseData::Message(m) => match &m.output {
                Some(o) => Outcome::bytes(o.content_type.clone(), o.data.clone()),
                None => Outcome::Unsupported { reason: "no output was recorded for this message".into() },
            },
            CaseData::Http(x) => match &x.response {
                Some(r) => match body::decoded(&r.headers, r.body.as_bytes()) {
                    Ok(b) => Outcome::Output {
                        output: Output::Http {
                            status: r.status,
                            headers: crate::http::end_to_end(&r.headers, true),
                            body: b.into(),
                        },
                    },
                    Err(e) => Outcome::error(format!("recorded response body: {e}")),
                },
                None => Outcome::Unsupported { reason: "no response was recorded for this request".into() },
            },
            CaseData::Packet(_) => Outcome::Unsupported { reason: "a packet has no recorded output".into() },
        }
    }

    fn batch(&self) -> usize {
        64
    }
}
