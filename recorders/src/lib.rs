/*!
Recorders that turn captured traffic into `replay` corpora: pcap and pcapng captures (TCP
reassembled into HTTP/1.1 exchanges, other packets kept as packet cases), the recording proxy in
front of an LLM or copilot API, HAR import and export, and the redaction all of them share.
*/

pub mod capture;
pub mod decode;
pub mod defrag;
pub mod har;
pub mod http;
#[cfg(feature = "live")]
pub mod live;
mod mailbox;
pub mod out;
pub mod pcap;
pub mod proxy;
pub mod redact;
pub mod tcp;
mod upstream;
