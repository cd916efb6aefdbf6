#!/usr/bin/env bash
# Idempotent setup for Serial Console Lab (`make setup` runs this).
#
#   a. Debian packages (QEMU, libvirt, the image builder's tools) and apt's package lists
#   b. /dev/kvm ownership/mode as Debian's udev rule would set it (root:kvm 0660)
#   c. virtlogd's cap on each serial log (max_size, max_backups), virtlogd + libvirtd running
#      (systemd if it is PID 1, else started directly), and a guard against libvirt re-probing
#      QEMU on every domain define
#   d. a non-root user: membership of the `libvirt` group
#   e. the Python virtualenv (.venv) with the project installed editable, plus test extras
#   f. the default guest image (`lab image build tiny`); the debian image is built on demand
#      (`lab image build debian`, about 40 s; the scenario tests build it), its tools are in a.
#   g. the web portal's terminal library (`npm ci` in web/; node and npm from apt if missing)
#
# Every step checks first and is skipped fast when already done, so a second run takes seconds.
# Runs as root, or as a normal user with sudo (used only for the system parts).
#
# Environment: PYTHON (default python3) creates the venv, VENV (default .venv) is where;
# SETUP_SKIP_IMAGE=1 skips step f; SETUP_DEFINE_SLOW_MS (default 5000) is the define-time guard;
# SETUP_LOG_MAX_SIZE (default 2097152) and SETUP_LOG_MAX_BACKUPS (default 3): virtlogd's cap.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
export DEBIAN_FRONTEND=noninteractive
# A normal user's PATH on Debian lacks the sbin directories, where mkfs.ext4 (the image builder)
# and libvirtd/virtlogd live.
for d in /usr/local/sbin /usr/sbin /sbin; do
  [[ :$PATH: == *:$d:* ]] || PATH=$PATH:$d
done
export PATH
VIRSH_URI=qemu:///system

APT_PACKAGES=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  busybox-static cpio zstd xz-utils e2fsprogs python3-venv gcc python3-dev
  # the debian image (`lab image build debian`, built on demand, not here: about 40 s): its root
  # directory (mmdebstrap, verifying Debian's signatures), its partition table (sfdisk); and the
  # per-VM config disk's password hash (openssl passwd -6)
  mmdebstrap debian-archive-keyring fdisk openssl
  # its EFI system partition (mkfs.vfat, mcopy), and the UEFI firmware of generation 2 VMs
  dosfstools mtools ovmf
  # not named by the lab itself, but this script and the Makefile need them (a minimal Debian
  # has neither pgrep nor make)
  procps make
  # the web portal's browser tests: Debian's Chromium, driven headless by Playwright (which
  # downloads no browser of its own), and the font the portal's pages ask for
  chromium fonts-dejavu-core
  # the multi-host tests' qemu+ssh:// test hosts run their own sshd in their namespaces; the
  # machine's own ssh service is left off (/etc/ssh/sshd_not_to_be_run, below)
  openssh-server
)

STEP="start"
T0=$(date +%s%N)

say() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die() {
  printf 'setup: FAILED (%s): %s\n' "$STEP" "$*" >&2
  exit 1
}
on_err() {
  local rc=$1 line=$2 cmd=$3
  # shellcheck disable=SC2016 # literal backquotes
  printf 'setup: FAILED in step "%s": `%s` exited %s (scripts/setup.sh line %s)\n' \
    "$STEP" "$cmd" "$rc" "$line" >&2
  exit "$rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# Milliseconds since $1 (a `date +%s%N` value).
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# --- privileges ------------------------------------------------------------------------------
if [[ $EUID -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  die "not running as root and sudo is not installed: run as root, or install sudo" \
    "(apt-get install sudo) and give $(id -un) sudo rights"
fi
# Run a command as root (directly, or through sudo for a normal user).
as_root() { "${SUDO[@]}" "$@"; }

has_systemd() { [[ -d /run/systemd/system ]]; }

# --- a. packages -----------------------------------------------------------------------------
STEP="apt packages"
missing=()
# dpkg-query prints a line per known package and complains (exit 1) about unknown ones.
status=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null || true)
for p in "${APT_PACKAGES[@]}"; do
  grep -qx "$p install ok installed" <<<"$status" || missing+=("$p")
done
# The image builder resolves versions with apt-cache and fetches with `apt-get download`, so the
# package lists must exist even when every package is installed. (Lists may be stored compressed,
# e.g. *_Packages.lz4, hence the trailing glob.)
have_lists() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
if ((${#missing[@]})); then
  say "apt: installing ${missing[*]}"
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    # Installing the package would start an ssh server on this machine; the lab only needs the
    # binary. Debian's ssh service (init script and systemd unit) does not start while this
    # file exists; remove it to run the machine's own sshd.
    say "apt: openssh-server is for the test hosts only: its service stays off (/etc/ssh/sshd_not_to_be_run)"
    as_root mkdir -p /etc/ssh
    as_root touch /etc/ssh/sshd_not_to_be_run
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
elif ! have_lists; then
  say "apt: packages installed; no package lists in /var/lib/apt/lists, running apt-get update"
  as_root apt-get update -qq
else
  say "apt: ${#APT_PACKAGES[@]} packages installed, package lists present"
fi
have_lists || die "apt-get update left no package lists in /var/lib/apt/lists"

# --- b. /dev/kvm -----------------------------------------------------------------------------
# Without udev /dev/kvm is root:root 0600. libvirt runs QEMU as libvirt-qemu (group kvm), decides
# KVM is unusable while its capability cache says KVM, and then re-probes QEMU on every define.
STEP="/dev/kvm permissions"
KVM_CHANGED=0
if [[ -e /dev/kvm ]]; then
  getent group kvm >/dev/null || { say "kvm: creating group kvm"; as_root groupadd --system kvm; }
  read -r kvm_group kvm_mode < <(stat -c '%G %a' /dev/kvm)
  if [[ $kvm_group != kvm ]] || (((8#$kvm_mode & 8#060) != 8#060)); then
    say "kvm: /dev/kvm was $kvm_group mode $kvm_mode; setting root:kvm 0660 (what udev would do)"
    as_root chgrp kvm /dev/kvm
    as_root chmod 0660 /dev/kvm
    KVM_CHANGED=1
  else
    say "kvm: /dev/kvm is group kvm, mode $kvm_mode"
  fi
  if id libvirt-qemu >/dev/null 2>&1 && ! grep -qw kvm <<<"$(id -nG libvirt-qemu)"; then
    say "kvm: adding user libvirt-qemu to group kvm"
    as_root usermod -aG kvm libvirt-qemu
    KVM_CHANGED=1
  fi
else
  say "kvm: no /dev/kvm on this machine; guests will run under TCG (slower)"
fi

# --- c. daemons ------------------------------------------------------------------------------
STEP="libvirt daemons"
virsh_ok() { as_root timeout 10 virsh -c "$VIRSH_URI" version >/dev/null 2>&1; }
wait_for_libvirt() {
  local i
  for ((i = 0; i < 60; i++)); do
    virsh_ok && return 0
    sleep 0.5
  done
  die "libvirtd does not answer \`virsh -c $VIRSH_URI version\` after 30 s" \
    "(see /var/log/libvirt/ or run \`libvirtd\` in the foreground to see why)"
}
start_libvirtd() {
  if has_systemd; then
    as_root systemctl start libvirtd
  else
    as_root libvirtd -d
  fi
}
restart_libvirtd() {
  say "libvirt: restarting libvirtd ($1)"
  if has_systemd; then
    as_root systemctl restart libvirtd
  else
    local pids i
    pids=$(pgrep -x libvirtd || true)
    if [[ -n $pids ]]; then
      # shellcheck disable=SC2086 # one pid per word
      as_root kill $pids
      for ((i = 0; i < 60; i++)); do
        pgrep -x libvirtd >/dev/null || break
        sleep 0.5
      done
      pgrep -x libvirtd >/dev/null && die "libvirtd (pid $pids) did not exit within 30 s of SIGTERM"
    fi
    as_root libvirtd -d
  fi
  wait_for_libvirt
}

# The cap on each VM's serial log (the boot-diagnostics blob): virtlogd keeps the current file up
# to max_size bytes and max_backups older ones. Its settings are global (every log it writes),
# so the cap is the same for every VM: by default 2 MiB x (3 + 1) = 8 MiB (README, "Boot
# diagnostics"). Written only when they differ, then virtlogd re-execs (SIGUSR1, which is also
# systemd's reload): it keeps its open logs and the guests' pipes across the exec, so running
# guests lose no output, and it reads the new settings.
STEP="virtlogd log cap"
LOG_MAX_SIZE=${SETUP_LOG_MAX_SIZE:-2097152}
LOG_MAX_BACKUPS=${SETUP_LOG_MAX_BACKUPS:-3}
VIRTLOGD_CONF=/etc/libvirt/virtlogd.conf
LOG_CAP_NOTE="# Serial Console Lab (scripts/setup.sh): the cap on every VM's serial log"
conf_value() {
  sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p" "$VIRTLOGD_CONF" \
    2>/dev/null | tail -n1
}
if [[ $(conf_value max_size) == "$LOG_MAX_SIZE" && $(conf_value max_backups) == "$LOG_MAX_BACKUPS" ]]; then
  say "virtlogd: serial logs capped at $LOG_MAX_SIZE bytes x ($LOG_MAX_BACKUPS + 1) files"
else
  say "virtlogd: max_size = $LOG_MAX_SIZE, max_backups = $LOG_MAX_BACKUPS in $VIRTLOGD_CONF"
  conf_tmp=$(mktemp)
  # Earlier settings of the two keys go (the commented-out defaults stay); ours are appended.
  { grep -v -E "^[[:space:]]*(max_size|max_backups)[[:space:]]*=" "$VIRTLOGD_CONF" 2>/dev/null |
    grep -v -x -F "$LOG_CAP_NOTE" || true
    printf '%s\nmax_size = %s\nmax_backups = %s\n' "$LOG_CAP_NOTE" "$LOG_MAX_SIZE" \
      "$LOG_MAX_BACKUPS"
  } >"$conf_tmp"
  as_root install -m 0644 "$conf_tmp" "$VIRTLOGD_CONF"
  rm -f "$conf_tmp"
  if has_systemd && systemctl is-active --quiet virtlogd; then
    as_root systemctl reload virtlogd
    say "virtlogd: reloaded (re-exec; open logs kept)"
  elif pids=$(pgrep -x virtlogd); then
    # shellcheck disable=SC2086 # one pid per word
    as_root kill -USR1 $pids
    say "virtlogd: re-exec'd (SIGUSR1; open logs kept)"
  fi
fi

LIBVIRTD_WAS_RUNNING=0
pgrep -x libvirtd >/dev/null && LIBVIRTD_WAS_RUNNING=1
if has_systemd; then
  if systemctl is-active --quiet virtlogd && systemctl is-active --quiet libvirtd; then
    say "libvirt: virtlogd and libvirtd active (systemd)"
  else
    say "libvirt: starting virtlogd and libvirtd with systemctl"
    as_root systemctl enable --now virtlogd libvirtd
  fi
else
  started=()
  pgrep -x virtlogd >/dev/null || { as_root virtlogd -d; started+=(virtlogd); }
  ((LIBVIRTD_WAS_RUNNING)) || { as_root libvirtd -d; started+=(libvirtd); }
  if ((${#started[@]})); then
    say "libvirt: no service manager; started ${started[*]} (-d)"
  else
    say "libvirt: virtlogd and libvirtd running (no service manager)"
  fi
fi
wait_for_libvirt

if ((LIBVIRTD_WAS_RUNNING && KVM_CHANGED)); then
  restart_libvirtd "it was started before /dev/kvm was fixed and must re-read QEMU's capabilities"
fi

# Guard: time the define of a throwaway domain. Normally ~0.05 s; when libvirt thinks its QEMU
# capability cache is stale it re-probes QEMU on *every* define (~50 s each on this kind of
# machine). A first define right after a fresh start may include the one-time probe, so a slow
# define is measured a second time before concluding anything.
STEP="libvirt define check"
PROBE_XML=$(mktemp)
PROBE_NAME="scl-setup-probe-$$-$RANDOM"
cleanup_probe() {
  as_root virsh -q -c "$VIRSH_URI" undefine "$PROBE_NAME" >/dev/null 2>&1 || true
  rm -f "$PROBE_XML"
}
trap cleanup_probe EXIT
cat >"$PROBE_XML" <<EOF
<domain type='qemu'>
  <name>$PROBE_NAME</name>
  <memory unit='MiB'>16</memory>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
EOF
chmod 0644 "$PROBE_XML"
time_define() {
  local t out
  t=$(date +%s%N)
  if ! out=$(as_root timeout 300 virsh -q -c "$VIRSH_URI" define "$PROBE_XML" 2>&1); then
    die "\`virsh define\` of a minimal throwaway domain failed: $out"
  fi
  DEFINE_MS=$(ms_since "$t")
  # 2>: without a polkit service, virsh warns "Authorization not available" even on success.
  as_root virsh -q -c "$VIRSH_URI" undefine "$PROBE_NAME" >/dev/null 2>&1 || true
}
SLOW_MS=${SETUP_DEFINE_SLOW_MS:-5000}  # override only to exercise the guard
time_define
if ((DEFINE_MS > SLOW_MS)); then
  first=$DEFINE_MS
  time_define
  if ((DEFINE_MS > SLOW_MS)); then
    restart_libvirtd "a domain define took ${first} ms, then ${DEFINE_MS} ms: libvirt was re-probing QEMU capabilities on every define"
    time_define
    if ((DEFINE_MS > SLOW_MS)); then
      warn "a define still takes ${DEFINE_MS} ms after restarting libvirtd; check /dev/kvm" \
        "access for libvirt-qemu and /var/cache/libvirt/qemu/capabilities"
    else
      say "libvirt: define now takes ${DEFINE_MS} ms"
    fi
  else
    say "libvirt: first define took ${first} ms (one-time capability probe), then ${DEFINE_MS} ms"
  fi
else
  say "libvirt: a domain define takes ${DEFINE_MS} ms"
fi
cleanup_probe
trap - EXIT

# --- d. group membership for a normal user ---------------------------------------------------
STEP="libvirt group"
if [[ $EUID -ne 0 ]]; then
  me=$(id -un)
  if grep -qw libvirt <<<"$(id -nG)"; then
    say "user: $me is in group libvirt"
  elif grep -qx "$me" <<<"$(getent group libvirt | cut -d: -f4 | tr ',' '\n')"; then
    say "user: $me was added to group libvirt but this session predates it: log in again," \
      "or run commands through \`sg libvirt -c 'make run'\`"
  else
    say "user: adding $me to group libvirt (sudo usermod -aG libvirt $me)"
    as_root usermod -aG libvirt "$me"
    say "user: log in again (or use \`sg libvirt -c 'make run'\`) for the new group to apply"
  fi
  if ! has_systemd && ! timeout 10 virsh -c "$VIRSH_URI" version >/dev/null 2>&1; then
    warn "$me cannot reach $VIRSH_URI yet. Without a service manager libvirt's access check" \
      "for non-root users goes through polkit (dbus + polkitd must run); running as root avoids it"
  fi
else
  say "user: root (no group needed)"
fi

# --- e. virtualenv ---------------------------------------------------------------------------
STEP="python virtualenv"
pyproject_sha=$(sha256sum pyproject.toml | cut -d' ' -f1)
STAMP="$VENV/.installed-$pyproject_sha"
if [[ -x $VENV/bin/lab && -e $STAMP ]]; then
  say "venv: $VENV up to date (pyproject.toml ${pyproject_sha:0:12})"
else
  if [[ -x $VENV/bin/python ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    say "venv: $VENV/bin/python is broken (its base interpreter moved?); recreating"
    rm -rf "$VENV"
  fi
  if [[ ! -x $VENV/bin/python ]]; then
    command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH (set PYTHON=/path/to/python3.11+)"
    say "venv: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV"
  fi
  say "venv: pip install -e '.[test]'"
  t=$(date +%s%N)
  # pip's and the build backend's chatter goes to a log, shown only if the install fails.
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
    "$VENV/bin/python" -m pip install -e '.[test]'; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "pip install -e '.[test]' failed (last lines above; full log in $log)"
  fi
  [[ -x $VENV/bin/lab ]] || die "pip install finished but $VENV/bin/lab is missing"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
  say "venv: installed in $(($(ms_since "$t") / 1000)) s"
fi

# --- f. default image ------------------------------------------------------------------------
STEP="image build tiny"
if [[ ${SETUP_SKIP_IMAGE:-0} == 1 ]]; then
  say "image: skipped (SETUP_SKIP_IMAGE=1)"
else
  t=$(date +%s%N)
  out=$(COLUMNS=200 "$VENV/bin/lab" image build tiny 2>&1) || {
    printf '%s\n' "$out" >&2
    die "\`$VENV/bin/lab image build tiny\` failed (output above)"
  }
  say "image: $(tail -n1 <<<"$out") [$(ms_since "$t") ms]"
fi

# --- g. web portal ---------------------------------------------------------------------------
# The portal (web/) serves the terminal library from web/node_modules, installed by `npm ci` from
# the lock file. node and npm come from apt when missing; a machine whose nodejs package already
# bundles npm (NodeSource's) keeps it, since Debian's npm package would conflict with it.
STEP="web portal (npm ci)"
if ! command -v npm >/dev/null 2>&1; then
  say "web: installing nodejs and npm (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    nodejs npm
fi
lock_sha=$(sha256sum web/package-lock.json | cut -d' ' -f1)
WEB_STAMP="web/node_modules/.installed-$lock_sha"
if [[ -e $WEB_STAMP ]]; then
  say "web: node_modules up to date (package-lock.json ${lock_sha:0:12})"
else
  t=$(date +%s%N)
  log=$(mktemp)
  # --ignore-scripts: the packages need no build step, so none of theirs runs as root.
  if ! (cd web && npm ci --ignore-scripts --no-audit --no-fund) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "\`npm ci\` in web/ failed (last lines above)"
  fi
  rm -f "$log"
  touch "$WEB_STAMP"
  say "web: npm ci in $(ms_since "$t") ms"
fi

STEP="done"
say "done in $(($(ms_since "$T0") / 1000)).$(($(ms_since "$T0") % 1000 / 100)) s ($REPO_ROOT)"
