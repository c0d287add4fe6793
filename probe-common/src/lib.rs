#![no_std]
//! headroom-probe-common: map key and value types shared by the eBPF programs and their userspace loader.
