//! The Wasm reactor ABI of `docs/target-abi.md`: `replay_alloc`, `replay_handle` and
//! `replay_stateless`, over the frame codec of [`crate::abi`].

use std::cell::RefCell;

use crate::abi::{self, Config};

thread_local! {
    /// The last response frame; valid until the next `replay_handle`.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static CONFIG: RefCell<Option<Result<Config, String>>> = const { RefCell::new(None) };
}

/// Allocates `len` bytes for the host to write a request frame into.
#[unsafe(no_mangle)]
pub extern "C" fn replay_alloc(len: u32) -> *mut u8 {
    Box::into_raw(vec![0u8; len as usize].into_boxed_slice()).cast()
}

/// Handles the request frame at `ptr` (from `replay_alloc(len)`, which this frees) and
/// returns the response frame as `ptr << 32 | len`.
#[unsafe(no_mangle)]
pub extern "C" fn replay_handle(ptr: *mut u8, len: u32) -> u64 {
    // SAFETY: the ABI says `ptr` and `len` are exactly what `replay_alloc` returned and was
    // given, so this is the boxed slice it leaked, handed back once.
    let frame = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len as usize)) };
    let cfg = CONFIG.with(|c| c.borrow_mut().get_or_insert_with(Config::from_env).clone());
    let result = cfg.and_then(|cfg| abi::decode_request(&frame).and_then(|input| abi::handle(&cfg, input)));
    drop(frame);
    OUT.with(|o| {
        let mut o = o.borrow_mut();
        abi::encode_response(&result, &mut o);
        ((o.as_ptr() as u64) << 32) | o.len() as u64
    })
}

/// Declares that this module keeps no state between cases, so a host may reuse one instance
/// (`instance = "warm"`).
#[unsafe(no_mangle)]
pub extern "C" fn replay_stateless() -> u32 {
    1
}
