#![no_std]
// Library target so `cargo check` and clippy can see the crate; the programs live in main.rs.
