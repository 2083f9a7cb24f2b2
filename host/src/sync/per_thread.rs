//! What a run sets for the connections its thread makes: libgit2 makes its
//! streams on the thread that transfers, and a run is one thread, so a
//! thread-local slot set for the run's length reaches every stream it opens
//! (the client certificate to present, the list a cancel shuts down).

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread-local slot of `T`, empty unless a run set it.
pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

/// While this lives, its slot holds what [`set`] put there; dropping it
/// restores what the slot held before.
#[derive(Debug)]
#[must_use = "the slot holds the value only while the guard lives"]
pub struct Set<T: 'static> {
    slot: &'static Slot<T>,
    before: Option<T>,
    /// Bound to the thread whose slot it set.
    _thread: std::marker::PhantomData<*const ()>,
}

pub fn set<T>(slot: &'static Slot<T>, value: Option<T>) -> Set<T> {
    let before = slot.with(|s| s.replace(value));
    Set {
        slot,
        before,
        _thread: std::marker::PhantomData,
    }
}

/// What the slot holds on this thread now.
pub fn get<T: Clone>(slot: &'static Slot<T>) -> Option<T> {
    slot.with(|s| s.borrow().clone())
}

impl<T> Drop for Set<T> {
    fn drop(&mut self) {
        self.slot.with(|s| *s.borrow_mut() = self.before.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: RefCell<Option<u32>> = const { RefCell::new(None) };
    }

    #[test]
    fn a_guard_restores_what_was_there_before() {
        let outer = set(&SLOT, Some(1));
        {
            let _inner = set(&SLOT, Some(2));
            assert_eq!(get(&SLOT), Some(2));
        }
        assert_eq!(get(&SLOT), Some(1));
        drop(outer);
        assert_eq!(get(&SLOT), None);
        std::thread::spawn(|| assert_eq!(get(&SLOT), None))
            .join()
            .unwrap();
    }
}
