//! What a target did with one case.

use corpora::{Blob, CaseId, Header};
use serde::{Deserialize, Serialize};

/// The record kind byte of an observation in a run directory (cases use 1 to 3).
pub const OBSERVATION_KIND: u8 = 0x10;

/// One target's observation of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// The case.
    pub case: CaseId,
    /// What happened.
    pub outcome: Outcome,
    /// Wall time the call took, in nanoseconds.
    pub duration_ns: u64,
}

impl Observation {
    /// Whether the outcome may differ from run to run of the same build (a stack overflow,
    /// resource exhaustion, a wall-clock timeout): the diff calls such a case inconclusive,
    /// never a regression.
    pub fn nondeterministic(&self) -> bool {
        self.outcome.nondeterministic()
    }
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The target answered.
    Output {
        /// The answer.
        output: Output,
    },
    /// The target refused the case or failed in a way it reported itself.
    Error {
        /// What it said.
        message: String,
    },
    /// A Wasm trap.
    Trap {
        /// The trap code (`unreachable`, `stack_overflow`, `out_of_fuel`, `interrupt`, ...).
        code: String,
        /// The trap message with its wasm backtrace.
        message: String,
        /// Whether this trap depends on the machine rather than the input (stack overflow, an
        /// epoch interrupt).
        nondeterministic: bool,
    },
    /// The call passed its time bound and was stopped.
    Timeout {
        /// The bound, in milliseconds.
        after_ms: u64,
    },
    /// A process exited with a failure status or was killed by a signal.
    Crash {
        /// The exit status, if it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<i32>,
        /// The signal, if one killed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// The tail of what it wrote to stderr.
        stderr: Blob,
    },
    /// The call hit a resource bound (memory growth refused, output cap) and was stopped.
    Exhausted {
        /// `memory`, `output`, `table`, ...
        resource: String,
        /// What happened.
        message: String,
    },
    /// The target cannot run this kind of case (a packet sent to an HTTP-only target, say).
    Unsupported {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// See [`Observation::nondeterministic`].
    pub fn nondeterministic(&self) -> bool {
        match self {
            Outcome::Trap { nondeterministic, .. } => *nondeterministic,
            Outcome::Timeout { .. } | Outcome::Exhausted { .. } => true,
            _ => false,
        }
    }

    /// A short name of the outcome's kind, for counts and tables.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Output { .. } => "output",
            Outcome::Error { .. } => "error",
            Outcome::Trap { .. } => "trap",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Crash { .. } => "crash",
            Outcome::Exhausted { .. } => "exhausted",
            Outcome::Unsupported { .. } => "unsupported",
        }
    }

    /// An error outcome.
    pub fn error(message: impl Into<String>) -> Outcome {
        Outcome::Error { message: message.into() }
    }

    /// An output of bytes.
    pub fn bytes(content_type: impl Into<String>, data: impl Into<Blob>) -> Outcome {
        Outcome::Output { output: Output::Bytes { content_type: content_type.into(), data: data.into() } }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// Bytes with a media type.
    Bytes {
        /// The media type.
        content_type: String,
        /// The bytes.
        data: Blob,
    },
    /// An HTTP response, its body with transfer and content coding removed.
    Http {
        /// The status code.
        status: u16,
        /// Headers in the order received (hop-by-hop headers dropped).
        headers: Vec<Header>,
        /// The decoded body.
        body: Blob,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_round_trip_through_messagepack_and_json() {
        let outcomes = [
            Outcome::bytes("application/json", b"{}".to_vec()),
            Outcome::Output {
                output: Output::Http {
                    status: 200,
                    headers: vec![Header::new("Content-Type", "text/plain")],
                    body: Blob(vec![0, 1, 255]),
                },
            },
            Outcome::Trap { code: "stack_overflow".into(), message: "m".into(), nondeterministic: true },
            Outcome::Timeout { after_ms: 5 },
            Outcome::Crash { status: None, signal: Some(9), stderr: Blob(b"boom".to_vec()) },
            Outcome::Exhausted { resource: "memory".into(), message: "grow refused".into() },
            Outcome::error("nope"),
            Outcome::Unsupported { reason: "r".into() },
        ];
        for outcome in outcomes {
            let o = Observation { case: CaseId([7; 16]), outcome, duration_ns: 42 };
            let b = rmp_serde::to_vec_named(&o).unwrap();
            assert_eq!(rmp_serde::from_slice::<Observation>(&b).unwrap(), o);
            let j = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Observation>(&j).unwrap(), o, "{j}");
        }
    }

    #[test]
    fn machine_dependent_failures_are_nondeterministic() {
        assert!(Outcome::Timeout { after_ms: 1 }.nondeterministic());
        assert!(!Outcome::error("x").nondeterministic());
        assert!(
            !Outcome::Trap { code: "unreachable".into(), message: String::new(), nondeterministic: false }
                .nondeterministic()
        );
    }
}
