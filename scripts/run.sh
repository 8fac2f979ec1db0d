#!/usr/bin/env bash
# Builds guard and runs it. With no arguments it guards an interactive shell
# under the embedded default policy: `guard session -- $SHELL`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "run: building guard (release)"
cargo build --release --quiet -p guard-userspace
if [ $# -eq 0 ]; then
  set -- session -- "${SHELL:-/bin/bash}"
fi
exec ./target/release/guard "$@"
