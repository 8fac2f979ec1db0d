//! guard's kernel programs. One module per hook family; every map in `maps`.
#![no_std]
#![no_main]

mod bounded;
mod event;
mod exec;
mod file;
mod hold;
mod maps;
mod names;
mod net;
mod path;
mod rate;
mod session;
mod signal;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// LSM programs and bpf_send_signal need a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
