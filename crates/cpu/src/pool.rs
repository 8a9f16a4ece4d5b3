//! The worker pool every CPU kernel runs on. A [`crate::CpuBackend`] owns
//! one, sized by its caller; kernels take it as an argument (no global).
//!
//! A decode step issues a few hundred small parallel operations (one per
//! matmul, norm, attention), each lasting tens of microseconds, so waking
//! sleeping threads for each (what a general-purpose pool does once it idles)
//! costs as much as the work. Workers here spin on an epoch counter for a
//! while after each job and only then park on a condvar; a job is a borrowed
//! closure called with task indices that workers claim from an atomic counter.
//!
//! Hand-written because it is part of the product's hot path (the issue asks
//! for "a low-overhead thread pool, no per-op spawn, spin-then-park"); rayon
//! remains fine for coarse work outside the forward pass.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking. Long enough to bridge the
/// gap between two operations of a forward pass, short enough that an idle
/// server does not burn a core.
const SPIN: Duration = Duration::from_micros(300);

/// A job as the workers see it: the address of a `&(dyn Fn(usize) + Sync)`
/// whose lifetime was erased by [`ThreadPool::run`].
type JobRef = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Incremented once per job; workers wait for it to change.
    epoch: AtomicU64,
    job: Mutex<Option<SendJob>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// Workers that have not yet finished the current job.
    running: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    park: Mutex<()>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct SendJob(JobRef);
// SAFETY: the closure behind the pointer is `Sync`, and `run` keeps it alive
// until every worker has finished with it.
unsafe impl Send for SendJob {}

thread_local! {
    /// Set on pool workers and while a thread is inside `run`, so that nested
    /// parallel calls run inline instead of deadlocking.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    threads: usize,
    submit: Mutex<()>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool that runs jobs on `threads` threads (the caller counts as one).
    #[must_use]
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("hearth-worker-{i}"))
                    .spawn(move || worker_loop(&s))
                    .expect("spawning a worker thread") // ok: failing to start threads at startup is fatal
            })
            .collect();
        Self { shared, threads, submit: Mutex::new(()), workers }
    }

    /// Threads that execute jobs, the caller included.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Splits `data` into chunks of `chunk` elements and calls
    /// `f(chunk_index, chunk)` for each on the pool (inline when there is
    /// only one chunk).
    pub fn for_each_chunk_mut<T: Send>(&self, data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let chunk = chunk.max(1);
        let len = data.len();
        let shared = SharedOut::new(data);
        self.run(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            // SAFETY: chunk i covers start..start+n, disjoint from every other chunk.
            let part = unsafe { shared.slice(start, chunk.min(len - start)) };
            f(i, part);
        });
    }

    /// Calls `f(i)` for every `i < n_tasks`, spread over the pool; returns
    /// when all calls are done. Tasks are claimed dynamically, so uneven
    /// tasks balance out. A panic in a task is re-raised here.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.threads == 1 || n_tasks == 1 || IN_POOL.get() {
            (0..n_tasks).for_each(f);
            return;
        }
        let _one_job_at_a_time = self.submit.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &*self.shared;
        // SAFETY: the erased reference is only dereferenced by workers between
        // the epoch bump below and their decrement of `running`, and this
        // function does not return before `running` is back to zero.
        let job: JobRef = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), JobRef>(f) };
        *s.job.lock().unwrap_or_else(PoisonError::into_inner) = Some(SendJob(job));
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        s.running.store(self.workers.len(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        {
            let _g = s.park.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        IN_POOL.set(true);
        let mine = panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f)));
        IN_POOL.set(false);
        while s.running.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if let Err(payload) = mine {
            panic::resume_unwind(payload);
        }
        assert!(!s.panicked.swap(false, Ordering::Relaxed), "a task panicked on a worker thread");
    }
}

fn claim_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker_loop(s: &Shared) {
    IN_POOL.set(true);
    let mut seen = 0u64;
    loop {
        let epoch = wait_for_job(s, seen);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        let job = *s.job.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(SendJob(ptr)) = job {
            // SAFETY: see `run`: the closure outlives this use.
            let f = unsafe { &*ptr };
            if panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.running.fetch_sub(1, Ordering::Release);
    }
}

/// Spins, then parks, until the epoch moves past `seen` (or shutdown).
fn wait_for_job(s: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = s.epoch.load(Ordering::Acquire);
        if e != seen || s.shutdown.load(Ordering::Acquire) {
            return e;
        }
        spins += 1;
        if !spins.is_multiple_of(1024) || start.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let g = s.park.lock().unwrap_or_else(PoisonError::into_inner);
        if s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Acquire) {
            // A timeout guards against a missed wake-up; it costs nothing when idle.
            let _ = s.wake.wait_timeout(g, Duration::from_millis(50));
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _g = self.shared.park.lock().unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A raw pointer to a buffer whose disjoint parts are written by different
/// tasks of one job (e.g. matmul tiles that interleave in the output).
pub struct SharedOut<T = f32> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedOut<T> {}

// SAFETY: users promise that concurrent accesses touch disjoint indices.
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Wraps `out` for the duration of one job.
    pub fn new(out: &mut [T]) -> Self {
        Self { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// The mutable sub-slice `start..start + len`.
    ///
    /// # Safety
    /// No other task may access any index of this range during the job, and
    /// the buffer passed to `new` must still be borrowed by the caller of the job.
    #[must_use]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "SharedOut range out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        let pool = ThreadPool::new(3);
        for n in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn nested_calls_run_inline() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = panic::catch_unwind(AssertUnwindSafe(|| pool.run(8, &|i| assert!(i != 5, "task five"))));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(SPIN * 3);
        let count = AtomicUsize::new(0);
        pool.run(64, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
