#!/usr/bin/env bash
# Installs what building and testing guard needs, idempotently, and says what it
# is doing. Fast when everything is already present. Run as root on Debian 12.
#
#   Debian packages: LLVM 22 (for bpf-linker), QEMU, busybox, cpio and binutils
#   (VM test tier; kernels themselves are fetched by `cargo xtask vm-test`)
#   rustup: nightly rust-src (the BPF target is built with -Z build-std=core)
#   cargo: bpf-linker 0.13 built against LLVM 22; cargo-fuzz (bounded fuzz step)
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get and BPF need it): sudo $0"
command -v cargo >/dev/null && command -v rustup >/dev/null \
  || die "cargo and rustup are needed (Rust 1.95 stable plus a nightly toolchain); install Rust with rustup first"

export PATH="$HOME/.cargo/bin:$PATH"

packages=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
          qemu-system-x86 busybox-static cpio binutils strace hyperfine)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  die "no nightly toolchain: run 'rustup toolchain install nightly --profile minimal' (the BPF target needs it)"
fi
if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  say "nightly rust-src present"
else
  say "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q '^bpf-linker 0\.13'; then
  say "bpf-linker present ($(bpf-linker --version))"
else
  say "building bpf-linker 0.13 against LLVM 22 (about 2 minutes)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --version '^0.13' \
    --no-default-features --features llvm-22
fi
if command -v cargo-fuzz >/dev/null; then
  say "cargo-fuzz present ($(cargo-fuzz --version 2>/dev/null | head -n1))"
else
  say "installing cargo-fuzz (about 2.5 minutes; the test suite fuzzes the policy parser and classifiers)"
  cargo install --locked cargo-fuzz
fi
say "ready"
