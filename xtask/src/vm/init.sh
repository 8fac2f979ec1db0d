#!/bin/busybox sh
# /init of the VM tier's initramfs (see docs/testing.md). Mounts what guard needs,
# insists on BPF LSM, runs each test binary listed in /etc/guard-vm/tests, prints
# one GUARD-VM-RESULT line for `cargo xtask vm-test` to parse, and powers off.

# End the firmware's unterminated "Booting from ROM..." line.
echo
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb

result() {
    echo "GUARD-VM-RESULT status=$1 kernel=$(uname -r) $2"
    sync
    poweroff -f
    sleep 60
}

fatal() {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! guard VM tier: $1"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    result fail "reason=$2"
}

must_mount() {
    mount -t "$1" "$1" "$2" || fatal "cannot mount $1 on $2" "mount-$1"
}

# /tmp and /run stay on the root file system (already in RAM): a tmpfs mounted
# over /tmp would hide binaries built under a CARGO_TARGET_DIR in /tmp.
must_mount proc /proc
must_mount sysfs /sys
must_mount devtmpfs /dev
must_mount securityfs /sys/kernel/security
must_mount bpf /sys/fs/bpf
must_mount cgroup2 /sys/fs/cgroup
must_mount tracefs /sys/kernel/tracing
must_mount debugfs /sys/kernel/debug
ip link set lo up || fatal "cannot bring up the loopback interface" "loopback"

lsm=$(cat /sys/kernel/security/lsm)
echo "guard-vm: kernel $(uname -r), lsm=$lsm"
case ",$lsm," in
    *,bpf,*) ;;
    *) fatal "BPF LSM is NOT active (lsm=$lsm); boot with lsm=...,bpf" "bpf-lsm-inactive" ;;
esac

. /etc/guard-vm/env
export GUARD_TEST_TIER=vm RUST_BACKTRACE=1
cd /tmp || fatal "no /tmp" "no-tmp"

passed=0
failed=0
failed_names=
while read -r name path <&3; do
    [ -n "$name" ] || continue
    echo "GUARD-VM-TEST start $name"
    start=$(date +%s)
    # A hung binary is killed so the ones after it still run.
    # --nocapture: a binary killed at the limit still shows what each test printed.
    timeout -s KILL "$GUARD_VM_TEST_TIMEOUT" "$path" --test-threads=1 --nocapture </dev/null
    rc=$?
    took=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "GUARD-VM-TEST pass $name ${took}s"
    else
        failed=$((failed + 1))
        failed_names="$failed_names${failed_names:+,}$name"
        why="exit status $rc"
        [ "$rc" -eq 137 ] && why="killed (SIGKILL; the per-binary limit is ${GUARD_VM_TEST_TIMEOUT}s)"
        echo "GUARD-VM-TEST FAIL $name ${took}s: $why"
    fi
done 3< /etc/guard-vm/tests

if [ $((passed + failed)) -eq 0 ]; then
    fatal "no test binaries in /etc/guard-vm/tests" "no-tests"
elif [ "$failed" -eq 0 ]; then
    result pass "passed=$passed failed=0"
else
    result fail "passed=$passed failed=$failed failed_tests=$failed_names"
fi
