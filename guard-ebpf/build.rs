use which::which;

/// Rebuild when the bpf-linker binary changes: cargo cannot express the
/// dependency on it any other way.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found on PATH; run scripts/setup.sh (it builds it against LLVM 22)"
        ),
    }
}
