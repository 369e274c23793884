//! [`ProcessGroup`]: a c10d process group (TCPStore rendezvous, Gloo for CPU tensors, NCCL for CUDA
//! tensors when built with the `nccl` feature), with every collective bounded by a timeout.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use balance_core::{Collective, ReduceOp};
use tch::Tensor;

use crate::error::{DistError, Result};
use crate::ffi;

/// How to join a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    /// The address of the store host (rank 0's machine), for example `127.0.0.1`.
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// True when this process hosts the store (rank 0, unless torchelastic's agent already hosts it).
    pub hosts_store: bool,
    /// Bounds the rendezvous and every collective.
    pub timeout: Duration,
    /// Namespaces this group's keys in the store (one store can serve several groups or attempts).
    pub prefix: String,
    /// Also create an NCCL backend for CUDA tensors (needs the `nccl` feature).
    pub nccl: bool,
}

impl GroupOptions {
    /// Options for `rank` of `world_size` on `master_addr:master_port`: rank 0 hosts the store, a
    /// 60-second timeout, Gloo only.
    pub fn new(
        master_addr: impl Into<String>,
        master_port: u16,
        rank: usize,
        world_size: usize,
    ) -> Self {
        Self {
            master_addr: master_addr.into(),
            master_port,
            rank,
            world_size,
            hosts_store: rank == 0,
            timeout: Duration::from_secs(60),
            prefix: "balance".into(),
            nccl: false,
        }
    }

    /// Sets the timeout (builder style).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn check(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(DistError::launch("world_size", "0", "at least 1"));
        }
        if self.rank >= self.world_size {
            return Err(DistError::launch(
                "rank",
                self.rank.to_string(),
                format!("a rank below the world size {}", self.world_size),
            ));
        }
        if self.timeout.is_zero() {
            return Err(DistError::launch("timeout", "0 s", "a positive duration"));
        }
        if self.nccl && !nccl_available() {
            return Err(DistError::launch(
                "nccl",
                "true",
                "a build of balance-dist with the `nccl` feature (and a CUDA libtorch)",
            ));
        }
        Ok(())
    }
}

/// True when this build can create NCCL backends (the `nccl` feature).
pub fn nccl_available() -> bool {
    // SAFETY: a constant query with no arguments.
    unsafe { ffi::bd_has_nccl() != 0 }
}

/// A joined c10d process group. Dropping it leaves the group.
///
/// ```no_run
/// use balance_dist::{GroupOptions, ProcessGroup};
/// use balance_core::ReduceOp;
/// # fn main() -> balance_dist::Result<()> {
/// let group = ProcessGroup::new(&GroupOptions::new("127.0.0.1", 29500, 0, 2))?;
/// let mut t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
/// group.all_reduce(&mut t, ReduceOp::Average)?; // the ranks' mean, on every rank
/// # Ok(()) }
/// ```
pub struct ProcessGroup {
    raw: NonNull<c_void>,
    rank: usize,
    world_size: usize,
    timeout_ms: AtomicU64,
    calls: AtomicU64,
    bytes: AtomicU64,
}

/// What this rank has sent into collectives so far: calls, and the bytes of the tensors it handed them
/// (the payload; a ring all-reduce moves about twice that over the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Collectives called (barriers included).
    pub calls: u64,
    /// Bytes of the tensors reduced, broadcast or gathered.
    pub bytes: u64,
}

// SAFETY: c10d's backends are built to be driven from any thread (ProcessGroupGloo queues work under a
// mutex; the store client serialises its socket). The handle is freed only by Drop (exclusive access).
unsafe impl Send for ProcessGroup {}
// SAFETY: as above; every method takes `&self` and c10d synchronises internally.
unsafe impl Sync for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("timeout", &self.timeout())
            .finish()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from bd_group_new and is freed exactly once.
        unsafe { ffi::bd_group_free(self.raw.as_ptr()) }
    }
}

fn as_c_int(value: usize, name: &str) -> Result<c_int> {
    c_int::try_from(value)
        .map_err(|_| DistError::launch(name, value.to_string(), "a value below 2^31"))
}

impl ProcessGroup {
    /// Joins the group: rendezvous through the TCPStore (rank 0, or the agent, hosts it) and the Gloo
    /// context; errors naming the rank when a peer does not join within the timeout.
    pub fn new(options: &GroupOptions) -> Result<Self> {
        options.check()?;
        let host = CString::new(options.master_addr.as_str())
            .map_err(|_| DistError::launch("master_addr", &options.master_addr, "no NUL byte"))?;
        let prefix = CString::new(options.prefix.as_str())
            .map_err(|_| DistError::launch("prefix", &options.prefix, "no NUL byte"))?;
        let timeout_ms = duration_ms(options.timeout);
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; `err` is a valid out-pointer.
        let raw = unsafe {
            ffi::bd_group_new(
                host.as_ptr(),
                options.master_port,
                as_c_int(options.rank, "rank")?,
                as_c_int(options.world_size, "world_size")?,
                c_int::from(options.hosts_store),
                timeout_ms as i64,
                prefix.as_ptr(),
                c_int::from(options.nccl),
                &mut err,
            )
        };
        NonNull::new(raw)
            .map(|raw| Self {
                raw,
                rank: options.rank,
                world_size: options.world_size,
                timeout_ms: AtomicU64::new(timeout_ms),
                calls: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            })
            .ok_or_else(|| {
                DistError::collective(
                    options.rank,
                    options.world_size,
                    format!(
                        "rendezvous at {}:{} (timeout {:?})",
                        options.master_addr, options.master_port, options.timeout
                    ),
                    ffi::take_error(err),
                )
            })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The collectives and payload bytes of this rank so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            calls: self.calls.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn count(&self, tensor: Option<&Tensor>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = tensor {
            let bytes = t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The bound on every collective.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Changes the bound on the collectives that follow.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(duration_ms(timeout).max(1), Ordering::Relaxed);
    }

    fn call(
        &self,
        op: &str,
        f: impl FnOnce(*mut c_void, i64, *mut *mut c_char) -> c_int,
    ) -> Result<()> {
        let mut err: *mut c_char = std::ptr::null_mut();
        let timeout = self.timeout_ms.load(Ordering::Relaxed) as i64;
        if f(self.raw.as_ptr(), timeout, &mut err) == 0 {
            return Ok(());
        }
        Err(DistError::collective(
            self.rank,
            self.world_size,
            op,
            ffi::take_error(err),
        ))
    }

    fn torch_error(&self, op: &str, e: tch::TchError) -> DistError {
        DistError::collective(
            self.rank,
            self.world_size,
            op,
            format!("preparing the tensor: {e}"),
        )
    }

    /// Runs `f` on a contiguous tensor that shares `tensor`'s values, copying back when `tensor` was not
    /// contiguous itself.
    fn on_contiguous(
        &self,
        op: &str,
        tensor: &mut Tensor,
        f: impl FnOnce(&mut Tensor) -> Result<()>,
    ) -> Result<()> {
        if tensor.is_contiguous() {
            return f(tensor);
        }
        let mut dense = tensor.f_contiguous().map_err(|e| self.torch_error(op, e))?;
        f(&mut dense)?;
        tensor.f_copy_(&dense).map_err(|e| self.torch_error(op, e))
    }

    /// Combines every rank's `tensor` in place (sum, average, max or min). Gloo for CPU tensors, NCCL for
    /// CUDA tensors (with the `nccl` feature; otherwise Gloo stages them through the host).
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        let code: c_int = match op {
            ReduceOp::Sum | ReduceOp::Average => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        self.count(Some(tensor));
        self.on_contiguous("all_reduce", tensor, |t| {
            let ptr = t.as_mut_ptr() as *mut c_void;
            // SAFETY: `t` outlives the call, which reads and writes it in place.
            self.call("all_reduce", |g, ms, err| unsafe {
                ffi::bd_all_reduce(g, ptr, code, ms, err)
            })
        })?;
        if op == ReduceOp::Average {
            let _ = tensor
                .f_div_scalar_(self.world_size as f64)
                .map_err(|e| self.torch_error("all_reduce (average)", e))?;
        }
        Ok(())
    }

    /// Overwrites `tensor` on every rank with rank `root`'s.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        self.count(Some(tensor));
        self.broadcast_uncounted(tensor, root)
    }

    fn broadcast_uncounted(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        let root = as_c_int(root, "root")?;
        self.on_contiguous("broadcast", tensor, |t| {
            let ptr = t.as_mut_ptr() as *mut c_void;
            // SAFETY: `t` outlives the call, which writes it in place.
            self.call("broadcast", |g, ms, err| unsafe {
                ffi::bd_broadcast(g, ptr, root, ms, err)
            })
        })
    }

    /// Every rank's `tensor` (same shape and kind on all ranks), in rank order.
    ///
    /// CPU tensors are gathered as one in-place broadcast from each rank in turn (the same bytes on the
    /// wire), not with Gloo's allgather: that copies the gathered values with libtorch's parallel kernels
    /// on c10d's worker thread, which gives OpenMP a second thread pool; with more pool threads than
    /// cores, libgomp stops spinning between parallel regions, and every later region of the training
    /// thread waited on a futex (measured: the backward passes of a gradient method 2.5x slower after
    /// the first evaluation's gather). CUDA tensors use the backend's allgather (NCCL).
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        self.count(Some(tensor));
        let mut input = tensor
            .f_contiguous()
            .map_err(|e| self.torch_error("all_gather", e))?;
        if input.device() == tch::Device::Cpu {
            return (0..self.world_size)
                .map(|root| {
                    let mut slot = input
                        .f_empty_like()
                        .map_err(|e| self.torch_error("all_gather", e))?;
                    if root == self.rank {
                        slot.f_copy_(&input)
                            .map_err(|e| self.torch_error("all_gather", e))?;
                    }
                    self.broadcast_uncounted(&mut slot, root)?;
                    Ok(slot)
                })
                .collect();
        }
        let mut outputs = (0..self.world_size)
            .map(|_| input.f_empty_like())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.torch_error("all_gather", e))?;
        let mut ptrs: Vec<*mut c_void> = outputs
            .iter_mut()
            .map(|t| t.as_mut_ptr() as *mut c_void)
            .collect();
        let input_ptr = input.as_mut_ptr() as *mut c_void;
        // SAFETY: `input`, `outputs` and `ptrs` (world_size entries) outlive the call.
        self.call("all_gather", |g, ms, err| unsafe {
            ffi::bd_all_gather(g, input_ptr, ptrs.as_mut_ptr(), ms, err)
        })?;
        Ok(outputs)
    }

    /// Returns once every rank has reached it (or errors at the timeout).
    pub fn barrier(&self) -> Result<()> {
        self.count(None);
        // SAFETY: no pointer but the group's.
        self.call("barrier", |g, ms, err| unsafe {
            ffi::bd_barrier(g, ms, err)
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

impl Collective for ProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> balance_core::Result<()> {
        Ok(ProcessGroup::all_reduce(self, tensor, op)?)
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> balance_core::Result<()> {
        Ok(ProcessGroup::broadcast(self, tensor, root)?)
    }

    fn all_gather(&self, tensor: &Tensor) -> balance_core::Result<Vec<Tensor>> {
        Ok(ProcessGroup::all_gather(self, tensor)?)
    }

    fn barrier(&self) -> balance_core::Result<()> {
        Ok(ProcessGroup::barrier(self)?)
    }
}
