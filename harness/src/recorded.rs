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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use corpora::{Header, HttpExchange, HttpResponse};

    use super::*;
    use crate::diff::{Rules, Verdict, compare};
    use crate::observation::Observation;

    /// A recorded exchange whose response is gzip, sent chunked, as on the wire.
    fn gzip_chunked_exchange(json: &str) -> Case {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let (first, rest) = gz.split_at(gz.len() / 2);
        let mut body = Vec::new();
        for part in [first, rest] {
            body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            body.extend_from_slice(part);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        Case::new(CaseData::Http(HttpExchange {
            response: Some(HttpResponse {
                headers: vec![
                    Header::new("Content-Type", "application/json"),
                    Header::new("Content-Encoding", "gzip"),
                    Header::new("Transfer-Encoding", "chunked"),
                    Header::new("Date", "Sat, 21 Nov 2026 10:00:00 GMT"),
                ],
                body: body.into(),
                ..HttpResponse::default()
            }),
            ..HttpExchange::default()
        }))
    }

    #[test]
    fn a_gzip_chunked_recorded_body_diffs_as_its_json() {
        let case = gzip_chunked_exchange(r#"{"choices":[{"text":"a"}],"usage":{"total":3}}"#);
        let recorded = Observation { case: case.id(), outcome: Recorded.observe(&case), duration_ns: 0 };
        let plain = |json: &str| Observation {
            case: case.id(),
            outcome: Outcome::Output {
                output: Output::Http {
                    status: 200,
                    headers: vec![
                        Header::new("Content-Type", "application/json"),
                        Header::new("Date", "Sun"),
                    ],
                    body: json.as_bytes().to_vec().into(),
                },
            },
            duration_ns: 0,
        };
        let same = compare(
            &recorded,
            &plain(r#"{"usage":{"total":3},"choices":[{"text":"a"}]}"#),
            &Rules::default(),
        );
        assert_eq!(same.verdict, Verdict::Same, "{same:?}");
        let d = compare(
            &recorded,
            &plain(r#"{"choices":[{"text":"b"}],"usage":{"total":3}}"#),
            &Rules::default(),
        );
        assert_eq!(d.differences.len(), 1);
        assert_eq!(d.differences[0].path, "$.body.choices[0].text");
    }
}
