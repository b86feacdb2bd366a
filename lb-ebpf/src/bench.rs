//! Benchmark harness. BPF_PROG_TEST_RUN with repeat > 1 reuses one buffer,
//! so a program that rewrites the frame would see its own output on the
//! next round. The harness writes the template frame back first (optionally
//! with a fresh source port, to make every round a new flow) and then
//! tail-calls the program under test. Timing the harness around a plain
//! XDP_DROP program gives the floor to subtract.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::BENCH_FRAME_WORDS as FRAME_WORDS;

use crate::{
    maps::{BENCH_FRAME, BENCH_PROGS},
    parse::ptr_at,
};

pub fn run(ctx: &XdpContext) -> u32 {
    let Some(frame) = BENCH_FRAME.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: pointer from a map lookup.
    let frame = unsafe { &mut *frame };
    let mut i = 0;
    while i < FRAME_WORDS {
        match ptr_at::<u64>(ctx, i * 8) {
            // SAFETY: bounds checked by ptr_at.
            Some(p) => unsafe { p.write_unaligned(frame.words[i]) },
            None => break,
        }
        i += 1;
    }
    if frame.vary_off != 0 {
        frame.counter = frame.counter.wrapping_add(1);
        let off = (frame.vary_off & 0x7f) as usize;
        if let Some(p) = ptr_at::<u32>(ctx, off) {
            // SAFETY: bounds checked by ptr_at.
            unsafe { p.write_unaligned(frame.counter.to_be()) };
        }
    }
    // SAFETY: tail call into the program under test; returns only on failure.
    unsafe { BENCH_PROGS.tail_call(ctx, 0) };
    xdp_action::XDP_ABORTED
}

/// One read of a random connection-table entry (picked by the frame's
/// IPv4 source address, which the harness varies): the memory floor of
/// any lookup in a table of this size, for `lb-bench`. Each run's read
/// feeds the next run's address (through the harness's counter, by a
/// zero the CPU cannot know in advance), so runs cannot overlap their
/// misses: the latency of one read, as a lookup that waits for it sees it.
pub fn touch_conn_table(ctx: &XdpContext) -> u32 {
    let Some(src) = ptr_at::<u32>(ctx, 14 + 12) else {
        return xdp_action::XDP_ABORTED;
    };
    let key = lb_common::FlowKey {
        // SAFETY: bounds checked by ptr_at.
        src: [unsafe { src.read_unaligned() }, 0, 0, 0],
        family: lb_common::AF_INET,
        ..lb_common::FlowKey::default()
    };
    let Some(e) = crate::conn::entry(crate::conn::set_base(&key)) else {
        return xdp_action::XDP_ABORTED;
    };
    // A clock value's top bit: 0, known only once the read is done.
    let zero = (e.info.last_seen >> 63) as u32;
    if let Some(frame) = BENCH_FRAME.get_ptr_mut(0) {
        // SAFETY: pointer from a map lookup; one CPU runs the harness.
        unsafe { (*frame).counter = (*frame).counter.wrapping_add(zero) };
    }
    xdp_action::XDP_DROP
}
