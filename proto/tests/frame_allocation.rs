//! A length prefix is a claim from outside: reading it must not allocate
//! what it claims. This test binary counts the largest allocation each
//! thread makes, so "refused before allocating" is measured, not assumed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use syncd_proto::{MAX_FRAME_LEN, ProtoError, read_frame, read_frame_async};

struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only records sizes.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}

#[test]
fn an_oversized_length_prefix_is_refused_without_allocating() {
    let input: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, b'x', b'y'];
    let (result, largest) = largest_allocation_during(|| read_frame(&mut &input[..]));
    assert!(matches!(result, Err(ProtoError::TooLarge { len: 0xFFFF_FFFF })), "{result:?}");
    assert_eq!(largest, 0, "refusing an oversized frame allocated {largest} bytes");

    let just_over = (MAX_FRAME_LEN + 1).to_be_bytes();
    let (result, largest) = largest_allocation_during(|| read_frame(&mut &just_over[..]));
    assert!(matches!(result, Err(ProtoError::TooLarge { .. })));
    assert_eq!(largest, 0);
}

#[test]
fn a_legal_length_that_lies_costs_only_what_arrives() {
    let mut input = MAX_FRAME_LEN.to_be_bytes().to_vec();
    input.extend_from_slice(b"abc");
    let (result, largest) = largest_allocation_during(|| read_frame(&mut input.as_slice()));
    assert!(matches!(result, Err(ProtoError::Truncated { got: 3, .. })), "{result:?}");
    assert!(largest <= 64 * 1024, "a 3-byte body allocated {largest} bytes");
}

#[test]
fn the_async_reader_refuses_an_oversized_length_without_allocating_it() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let input: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, b'x'];
    let (result, largest) = largest_allocation_during(|| runtime.block_on(read_frame_async(&mut &input[..])));
    assert!(matches!(result, Err(ProtoError::TooLarge { .. })));
    // The runtime may allocate a little for itself; nothing near the claim.
    assert!(largest < 64 * 1024, "allocated {largest} bytes");
}
