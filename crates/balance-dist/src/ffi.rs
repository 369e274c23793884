//! The C ABI of `csrc/c10d_shim.cpp`. Every function reports failure through `err` (a heap string the
//! caller frees with `bd_free_string`); tensors are tch's `at::Tensor*` handles.
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int, c_void};

extern "C" {
    pub fn bd_free_string(s: *mut c_char);
    pub fn bd_has_nccl() -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn bd_group_new(
        host: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        is_server: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        with_nccl: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    pub fn bd_group_free(group: *mut c_void);
    pub fn bd_all_reduce(
        group: *mut c_void,
        tensor: *mut c_void,
        op: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn bd_broadcast(
        group: *mut c_void,
        tensor: *mut c_void,
        root: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn bd_all_gather(
        group: *mut c_void,
        input: *mut c_void,
        outputs: *mut *mut c_void,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn bd_barrier(group: *mut c_void, timeout_ms: i64, err: *mut *mut c_char) -> c_int;
}

/// Takes ownership of a shim error string (null gives a generic message).
pub fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error (the shim returned no message)".into();
    }
    // SAFETY: the shim allocated `err` with malloc as a NUL-terminated string and hands it over.
    let message = unsafe { std::ffi::CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: freed once, by the allocator that made it.
    unsafe { bd_free_string(err) };
    message
}
