//! Host-side stub: the XDP programs live in the `lb-ebpf` binary, built for
//! `bpfel-unknown-none` by `lb-userspace/build.rs`. This library exists so
//! that lb-userspace can name the crate as a build dependency (rebuilds).
#![no_std]
