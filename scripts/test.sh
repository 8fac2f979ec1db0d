#!/usr/bin/env bash
# The whole test suite: installs prerequisites, then `cargo xtask test`
# (fmt, clippy, unit, host-kernel and VM-kernel integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo xtask test "$@"
