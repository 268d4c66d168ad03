/*!
The system under test that ships with `replay`: a small, deterministic crate built natively and
for `wasm32-wasip1`, so that `replay diff --a local --b prod-wasm` has something real to diff.

Two functions:
- [`serializer`]: editor context JSON in, a chat-completions request out. `v1` (the old one)
  adds a non-standard `metadata` object and truncates the prefix by characters; `v2` (the new
  one) follows the standard shape but truncates the prefix by *bytes*, a deliberate bug that
  shows only on multi-byte text near the limit.
- [`packet`]: raw packet bytes in, a JSON summary out. In the Wasm build, with the edge switch
  on, payloads are copied through a fixed 1500-byte buffer, so larger payloads come out wrong,
  and only in Wasm.

How a case reaches these functions is [`abi`]: the same frame codec serves the process stream
mode and the Wasm reactor module, and [`abi::handle`] dispatches on the case kind and content
type. The switches are read from the environment ([`Config::from_env`]) in every build.
*/
#![warn(missing_docs)]

pub mod abi;
pub mod packet;
pub mod serializer;

#[cfg(target_arch = "wasm32")]
mod reactor;

pub use abi::{Config, Input, Kind, Output, handle};
