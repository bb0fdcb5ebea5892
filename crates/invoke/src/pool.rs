//! A pool of environments for one function configuration (one revision of one version).
//!
//! Idle environments are kept on a stack: the most recently used is reused first, so the
//! others age out and the reaper stops them after the keep-alive. A pool is *retired* when its
//! configuration changes: idle environments stop at once, busy ones when they finish, so
//! in-flight invocations complete on the old code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::env::{Blueprint, Environment};

pub struct Pool {
    pub blueprint: Arc<Blueprint>,
    idle: std::sync::Mutex<Vec<Environment>>,
    /// Environments alive: idle, busy or starting.
    live: AtomicUsize,
    /// Of those, how many are provisioned (kept initialised whatever the traffic).
    provisioned: AtomicUsize,
    retired: AtomicBool,
    /// The most environments this pool may run at once.
    cap: usize,
}

/// What [`Pool::acquire`] found.
// Returned once per invocation and moved straight out: boxing would allocate on the warm path.
#[allow(clippy::large_enum_variant)]
pub enum Slot {
    /// A warm environment.
    Warm(Environment),
    /// Room for a new environment; the caller starts it (and must call [`Pool::release`] or
    /// [`Pool::forget`]).
    Cold,
    /// The pool is at its cap.
    Full,
}

impl Pool {
    pub fn new(blueprint: Arc<Blueprint>, cap: usize) -> Self {
        Self {
            blueprint,
            idle: std::sync::Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            provisioned: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            cap,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Environment>> {
        // A poisoned lock only means a panic elsewhere; the Vec itself stays consistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn acquire(&self) -> Slot {
        let popped = self.idle().pop();
        if let Some(mut env) = popped {
            env.thaw();
            return Slot::Warm(env);
        }
        self.acquire_cold_only()
    }

    /// Returns an environment after an invocation; it is stopped if it cannot be reused.
    pub fn release(&self, env: Environment, reusable: bool) {
        if reusable && !self.retired.load(Ordering::Acquire) {
            let mut idle = self.idle();
            // Checked again under the lock so a concurrent retire cannot miss this one.
            if !self.retired.load(Ordering::Acquire) {
                idle.push(env);
                return;
            }
        }
        self.drop_env(env);
    }

    fn drop_env(&self, env: Environment) {
        if env.provisioned {
            self.provisioned.fetch_sub(1, Ordering::AcqRel);
        }
        self.forget();
        retire(vec![env]);
    }

    /// Adds a freshly initialised provisioned environment (its slot was taken with
    /// [`Pool::reserve_slot`]).
    pub fn add_provisioned(&self, env: Environment) {
        self.provisioned.fetch_add(1, Ordering::AcqRel);
        self.release(env, true);
    }

    /// Takes a slot for an environment started outside an invocation.
    pub fn reserve_slot(&self) -> bool {
        matches!(self.acquire_cold_only(), Slot::Cold)
    }

    fn acquire_cold_only(&self) -> Slot {
        let mut live = self.live.load(Ordering::Acquire);
        loop {
            if live >= self.cap {
                return Slot::Full;
            }
            match self.live.compare_exchange_weak(live, live + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Slot::Cold,
                Err(now) => live = now,
            }
        }
    }

    pub fn provisioned_count(&self) -> usize {
        self.provisioned.load(Ordering::Acquire)
    }

    /// Turns provisioned environments beyond `keep` back into ordinary ones (reaped when idle).
    pub fn demote_provisioned(&self, keep: usize) {
        let mut idle = self.idle();
        for env in idle.iter_mut() {
            if self.provisioned.load(Ordering::Acquire) <= keep {
                break;
            }
            if env.provisioned {
                env.provisioned = false;
                self.provisioned.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Gives back a slot whose environment never started (or was dropped).
    pub fn forget(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Freezes idle environments unused for at least `after`.
    pub fn freeze_idle(&self, after: Duration) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for env in self.idle().iter_mut() {
            if !env.is_frozen() && now.duration_since(env.last_used) >= after && env.freeze() {
                n += 1;
            }
        }
        n
    }

    /// Stops idle environments unused for longer than `keep_alive`.
    pub fn reap(&self, keep_alive: Duration) -> usize {
        let now = Instant::now();
        let expired: Vec<Environment> = {
            let mut idle = self.idle();
            let (old, keep): (Vec<_>, Vec<_>) =
                idle.drain(..).partition(|e| !e.provisioned && now.duration_since(e.last_used) > keep_alive);
            *idle = keep;
            old
        };
        let n = expired.len();
        for _ in 0..n {
            self.forget();
        }
        retire(expired);
        n
    }

    /// Stops every idle environment and makes busy ones stop when they return.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        let envs: Vec<Environment> = self.idle().drain(..).collect();
        for env in envs {
            self.drop_env(env);
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// Provisioned environments that are idle now.
    pub fn idle_provisioned(&self) -> usize {
        self.idle().iter().filter(|e| e.provisioned).count()
    }
}

/// Stops environments off the async threads (killing and reaping can block briefly).
fn retire(envs: Vec<Environment>) {
    if envs.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || drop(envs));
}
