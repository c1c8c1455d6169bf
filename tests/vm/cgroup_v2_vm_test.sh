#!/usr/bin/env bash
# The cgroup-dependent tests on a pure cgroup v2 host, as Debian 12 boots (issue 15): this
# machine may have v1 hierarchies (a hybrid host takes the v1 path), so the tests run in a
# VM. qemu boots Debian 12's own kernel (linux-image-amd64's package, extracted, never
# installed) with a busybox initramfs; the guest mounts this host's root read-only over
# 9p (tmpfs over /tmp, /run, ...), mounts cgroup2 alone with its controllers laid out as
# systemd does for grove.service with Delegate=yes, and runs guest_tests.sh there with
# this build's own binaries. Each inner test's result comes back through a second 9p
# share; the guest's console (kernel and inner tests) is this test's output.
# Usage: cgroup_v2_vm_test.sh SOURCE_DIR BUILD_DIR WORK_DIR FUNCTION_RUNTIME_TEST
# GROVE_VM_ACCEL=kvm uses KVM (TCG by default: nested KVM hangs on some CI hosts);
# GROVE_VM_TIMEOUT bounds the VM (seconds); GROVE_VM_GUEST_CMD runs that shell command in
# the guest instead of the tests (to look around; the test then fails for want of results).
set -euo pipefail

SRC=$(readlink -f "${1:?usage: $0 source_dir build_dir work_dir function_runtime_test}")
BUILD=$(readlink -f "${2:?}")
WORK=$(readlink -m "${3:?}")
FN_TEST=$(readlink -f "${4:?}")
ACCEL=${GROVE_VM_ACCEL:-tcg}

fail() { echo "FAIL: $*" >&2; exit 1; }
[[ $(uname -m) == x86_64 ]] || fail "the VM is x86_64 (linux-image-amd64); this is $(uname -m)"
for tool in qemu-system-x86_64 cpio apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || fail "$tool is missing (tools/deps installs it)"
done
BUSYBOX=/bin/busybox
if [[ ! -x $BUSYBOX ]] || ! { ldd "$BUSYBOX" 2>&1 || true; } | grep -q "not a dynamic"; then
  fail "$BUSYBOX is not busybox-static's (tools/deps installs busybox-static)"
fi
for p in "$SRC" "$BUILD" "$WORK"; do
  [[ $p != *[[:space:]]* ]] || fail "a path with a space cannot go on the kernel command line: $p"
done

# -- the kernel: Debian 12's, the package linux-image-amd64 points at, cached -----------
CACHE=$WORK/cache
mkdir -p "$CACHE"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
      | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }' || true)
cached=$(find "$CACHE" -maxdepth 2 -name .ready -printf '%h\n' | xargs -r -n1 basename | sort -V | tail -n 1)
if [[ -z $pkg ]]; then
  # No package lists (e.g. GROVE_SKIP_DEPS): the kernel fetched last time, if any.
  pkg=$cached
  [[ -n $pkg ]] || fail "apt-cache knows no linux-image-amd64 (run apt-get update) and none is cached"
fi
KDIR=$CACHE/$pkg
# download_kernel: the package into $CACHE/dl (its status is the download's).
download_kernel() {
  echo "== fetching $pkg (apt-get download, extracted with dpkg-deb: no install)"
  rm -rf "$KDIR" "$CACHE"/dl && mkdir -p "$CACHE"/dl/x
  # (as root apt would hand the download to its _apt user, who may not enter this tree)
  local sandbox=(); ((EUID == 0)) && sandbox=(-o APT::Sandbox::User=root)
  (cd "$CACHE"/dl && apt-get download -q "${sandbox[@]}" "$pkg")
}
# extract_kernel: vmlinuz and the 9p modules into $KDIR, .ready last (called outside any
# condition, so set -e stops it at the first failure and nothing half-made is marked ready).
extract_kernel() {
  mkdir -p "$KDIR"/mods
  dpkg-deb -x "$CACHE"/dl/"$pkg"_*.deb "$CACHE"/dl/x
  vmlinuz=$(find "$CACHE"/dl/x/boot -name 'vmlinuz-*' | head -n 1)
  mods=$(find "$CACHE"/dl/x/lib/modules -mindepth 1 -maxdepth 1 -type d | head -n 1)
  [[ -f $vmlinuz && -d $mods ]] || fail "no kernel in $pkg"
  cp "$vmlinuz" "$KDIR"/vmlinuz
  # Only the modules 9p over virtio needs, dependencies first (their .modinfo's depends=;
  # the rest of the package, ~400 MB, is not kept).
  declare -A ko_path=() loaded=()
  while IFS= read -r f; do
    n=$(basename "$f" .ko)
    ko_path[${n//-/_}]=$f
  done < <(find "$mods" -name '*.ko')
  order=()
  add_module() {  # add_module NAME: its dependencies, then it
    local n=${1//-/_} dep
    [[ -n ${loaded[$n]:-} ]] && return
    loaded[$n]=1
    [[ -n ${ko_path[$n]:-} ]] || return 0  # built into the kernel
    for dep in $(tr '\0' '\n' < "${ko_path[$n]}" | sed -n 's/^depends=//p' | tr ',' ' '); do
      add_module "$dep"
    done
    cp "${ko_path[$n]}" "$KDIR"/mods/
    order+=("$(basename "${ko_path[$n]}")")
  }
  for m in virtio_pci 9pnet_virtio 9p; do add_module "$m"; done
  printf '%s\n' "${order[@]}" > "$KDIR"/mods/order
  rm -rf "$CACHE"/dl
  touch "$KDIR"/.ready
}
if [[ ! -f $KDIR/.ready ]]; then
  if download_kernel; then
    extract_kernel
  else
    # Package lists older than the mirror name a kernel it dropped: the one cached, if any.
    [[ -n $cached ]] || fail "apt-get download $pkg failed and no kernel is cached"
    echo "== apt-get download $pkg failed: using the cached $cached"
    rm -rf "$KDIR" "$CACHE"/dl
    pkg=$cached KDIR=$CACHE/$cached
  fi
fi

# -- the initramfs: busybox, those modules and /init ---------------------------------------
IR=$WORK/initramfs
rm -rf "$IR" && mkdir -p "$IR"/{bin,dev,proc,sys,host,newroot}
cp "$BUSYBOX" "$IR"/bin/busybox
cp -r "$KDIR"/mods "$IR"/mods
VMLINUZ=$KDIR/vmlinuz
cat > "$IR"/init <<'INIT'
#!/bin/busybox sh
# PID 1: the host's root (9p, read-only) with tmpfs where a system writes, cgroup2 alone,
# then the run script in a chroot; the VM powers off when it ends.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "init: insmod $m failed"; done
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $opts,ro,cache=loose host /host || { echo "init: no host share"; poweroff -f; }
R=/newroot
mount --bind /host $R
for d in tmp var/tmp run root var/log; do mount -t tmpfs -o mode=1777 tmpfs $R/$d; done
chmod 0700 $R/root
# The source and build trees stay visible when they are under one of those.
for p in $grove_src $grove_build; do
  if [ ! -d $R$p ]; then mkdir -p $R$p && mount --bind /host$p $R$p; fi
done
mkdir -p $R$grove_work/out
mount -t 9p -o $opts,rw out $R$grove_work/out || { echo "init: no out share"; poweroff -f; }
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
# what udev would add: bash's process substitution needs /dev/fd
ln -sf /proc/self/fd $R/dev/fd; ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout; ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 $R/sys/fs/cgroup
# inner ctest writes Testing/Temporary in the build tree
mount -t tmpfs tmpfs $R$grove_build/Testing 2>/dev/null
hostname grove-vm; ip link set lo up
echo "init: up $(cut -d' ' -f1 /proc/uptime) s after boot, cgroup2 controllers: $(cat $R/sys/fs/cgroup/cgroup.controllers)"
# switch_root, not chroot: a chrooted process may not make user namespaces
# (function_runtime's sandbox does). The run script is PID 1 from here and powers off.
exec switch_root $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 TERM=dumb /bin/bash $grove_work/out/run
INIT
chmod +x "$IR"/init
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK"/initrd.gz

# -- the run ----------------------------------------------------------------------------
OUT=$WORK/out
rm -rf "$OUT" && mkdir -p "$OUT"
mkdir -p "$BUILD"/Testing
# PID 1 in the guest: the tests, then power off (PID 1 must not exit).
{
  if [[ -n ${GROVE_VM_GUEST_CMD:-} ]]; then
    echo "$GROVE_VM_GUEST_CMD"  # a developer's own command in the guest instead of the tests
  else
    printf '/bin/bash %q %q %q %q\n' "$SRC/tests/vm/guest_tests.sh" "$BUILD" "$OUT" "$FN_TEST"
  fi
  echo 'echo "guest: the tests ended ($?), powering off"; sync; echo o > /proc/sysrq-trigger; sleep 60'
} > "$OUT"/run
echo "== booting $pkg ($ACCEL, 2 CPUs, 2 GiB) with cgroup v2 only"
# The VM's bound: what is left of 840 s after the kernel's fetch and the initramfs (ctest's
# TIMEOUT is 900, so the summary below is still printed when the VM runs out).
VM_TIMEOUT=${GROVE_VM_TIMEOUT:-$((840 - SECONDS))}
((VM_TIMEOUT >= 60)) || fail "the set-up took ${SECONDS} s: too little time left for the VM"
start=$(date +%s)
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -m 2048 -smp 2 \
  -display none -monitor none -serial stdio -nic none -no-reboot \
  -kernel "$VMLINUZ" -initrd "$WORK"/initrd.gz \
  -append "console=ttyS0 panic=-1 edd=off quiet cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 grove_src=$SRC grove_build=$BUILD grove_work=$WORK" \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$OUT",mount_tag=out,security_model=none,multidevs=remap \
  < /dev/null
qrc=$?
set -e
echo "== the VM ended (qemu rc $qrc) after $(( $(date +%s) - start )) s"
((qrc != 124)) || echo "FAIL: the VM did not end within $VM_TIMEOUT s"

# -- the inner tests' results -------------------------------------------------------------
expected=(cgroup_test deployment_freezer_test function_runtime_test_cgroups deployment_runtime_test)
failed=0
echo "== inner tests (name, exit code, seconds under $ACCEL, skipped)"
for t in "${expected[@]}"; do
  line=$({ awk -v t="$t" '$1 == t' "$OUT"/results 2>/dev/null || true; } | tail -n 1)
  if [[ -z $line ]]; then
    echo "FAIL: $t: no result (the VM ended before it did)"; failed=1; continue
  fi
  read -r _ rc secs skipped <<<"$line"
  echo "$t rc=$rc ${secs}s skipped=$skipped"
  if [[ $rc != 0 || $skipped != 0 ]]; then
    echo "FAIL: $t (rc $rc, skipped $skipped): its output is above and in $OUT/$t.log"; failed=1
  fi
done
[[ -f $OUT/layout ]] && { echo "== the guest's cgroups"; cat "$OUT"/layout; }
((failed == 0 && qrc == 0)) || exit 1
echo "PASS: every inner test passed on cgroup v2"
