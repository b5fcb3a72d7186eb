#!/usr/bin/env bash
# aarch64-lane.sh: pricefeed's test suite on aarch64 Linux, emulated on an x86-64 Linux host.
#
# Usage: scripts/aarch64-lane.sh DIR [pytest args...]
#
#   DIR           where the arm64 Debian root lives (made on the first run, reused after).
#                 Keep it outside the repository, e.g. /tmp/arm64-lane.
#   pytest args   passed to `python -m pytest` inside the root; default: -q (the whole suite).
#                 Relative paths are relative to the project copy, e.g. tests/processes/test_api.py.
#
# What it does, in order:
#   1. installs debootstrap and qemu-user-static on the host when they are missing (apt-get);
#   2. registers qemu-aarch64-static with binfmt_misc, with the F ("fix binary") flag, so the
#      kernel runs every aarch64 ELF through qemu, inside a chroot too and for every
#      subprocess the tests start (sys.executable, gcc, sh, useradd, ...); the entry is removed
#      on exit, and binfmt_misc unmounted again if this script mounted it. (binfmt-support is
#      not needed: the entry is written to binfmt_misc directly, and only for this run.)
#   3. in a private mount and pid namespace (nothing mounted here is visible to the host, and
#      every process started inside dies with it): builds an arm64 Debian bookworm root in DIR
#      with `debootstrap --foreign` and the second stage under qemu, unless DIR holds a finished
#      one; installs python3, python3-venv, python3-dev, gcc, g++, libatomic1, ... with apt;
#   4. copies the project (this script's directory's parent, without .git, build output,
#      compiled extensions and caches) to /lane/src in the root, makes /lane/venv there,
#      `pip install -e '.[test]'` (which builds the C accelerator for aarch64);
#   5. prints what the lane proves (machine, fences, futex syscall, accelerator, futex_waitv),
#      then runs `python -m pytest` in the chroot, with /proc, a private /dev, a fresh tmpfs
#      on /dev/shm and another on /tmp, and unmounts them all on exit, failure included;
#   6. exits with pytest's exit code (5, "no tests collected", is a failure too), or with 100
#      when the lane itself could not be set up (the message before it says which step).
#
# Environment:
#   PRICEFEED_*            passed into the root: PRICEFEED_PURE=1 runs the pure-Python paths.
#   LANE_EXTRA_PACKAGES    Debian packages to add to the root (default: "g++ rustc-web", the
#                          compilers tests/interop/test_interop.py uses; set it to "" to skip them).
#   LANE_MIRROR            a Debian mirror URL; by default the one this machine's apt uses.
#
# The Debian mirror is read from this machine's apt sources at run time (one-line .list and
# deb822 .sources files); no host name is written here.
#
# Must run as root (debootstrap, chroot, mount, binfmt_misc). Only one lane may use a DIR at a
# time (a lock on DIR says so). Timings of the root build, the install and the suite are
# printed as they finish. On an aarch64 host the same steps run natively, without qemu
# (untested).

set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
SRC=$(cd "$(dirname "$SCRIPT")/.." && pwd)   # the project tree to test
SUITE=bookworm
ARCH=arm64
QEMU=/usr/bin/qemu-aarch64-static
EMULATED=1
[[ $(uname -m) != aarch64 ]] || EMULATED=0
SETUP_FAILED=100   # our exit code when the lane itself fails, distinct from pytest's 0 to 5
# Inside the root: the project copy and its virtual environment.
LANE=/lane
# Marker files in DIR: ours (we may wipe an unfinished root), and finished (reuse it).
OWNED=.pricefeed-lane
DONE=.pricefeed-lane-root-done
# What the tests need in the root. gcc, python3-dev and libc6-dev build posix_ipc and the
# accelerator; libatomic1 gives the pure-Python paths their fences; passwd (useradd) and
# util-linux (unshare) serve tests/processes/test_environment.py; g++ and a Rust compiler
# tests/interop/test_interop.py. bookworm's own rustc (1.63) is too old for clients/rust/publisher.rs
# (AtomicU64::from_ptr is Rust 1.75); rustc-web is Debian's newer Rust for bookworm, installed
# as /usr/bin/rustc.
PACKAGES=(python3 python3-venv python3-dev gcc libc6-dev libatomic1 passwd util-linux ca-certificates)
read -r -a EXTRA <<<"${LANE_EXTRA_PACKAGES-g++ rustc-web}"
PACKAGES+=("${EXTRA[@]}")

log() { printf '[aarch64-lane] %s\n' "$*" >&2; }
TIMINGS=()
# timing WHAT T0: log how long WHAT took since T0 (a `now` reading), and keep it for the summary.
timing() {
    local line
    line="$1: $(since "$2") s"
    log "$line"
    TIMINGS+=("$line")
}
die() { log "error: $*"; exit "$SETUP_FAILED"; }
# The ERR trap while setting up: any failing step ends the lane with SETUP_FAILED.
# shellcheck disable=SC2329  # run by the ERR trap
setup_failed() { log "error: lane setup failed (line $1, exit code $2)"; exit "$SETUP_FAILED"; }
now() { date +%s.%N; }
# Seconds since $1 (a `now` reading), to one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Run "$@" in the background and wait for it. Bash runs a trap only between commands, so a
# TERM for this shell would wait for a foreground command to finish (a suite, a debootstrap);
# `wait` is interrupted by it at once. A background job of a non-interactive shell ignores
# SIGINT: in_root gives the programs in the root the default SIGINT back (the suite sends
# SIGINT to subscribers and expects KeyboardInterrupt).
interruptible() {
    local pid rc
    # In the job: no ERR trap and no errexit; its exit status is the command's, judged here.
    (
        trap - ERR
        set +e
        "$@"
    ) &
    pid=$!
    while :; do
        wait "$pid" && rc=0 || rc=$?
        kill -0 "$pid" 2>/dev/null || break   # still running: wait was cut short by a trap
    done
    return "$rc"
}

usage() {
    sed -n '2,9p' "$SCRIPT" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Host side: packages and binfmt_misc. This part runs in the host's namespaces.
# ---------------------------------------------------------------------------------------------

# Install the host packages that are missing, and nothing else.
ensure_host_packages() {
    local pkg missing=() wanted=(debootstrap debian-archive-keyring)
    ((EMULATED)) && wanted+=(qemu-user-static)
    for pkg in "${wanted[@]}"; do
        # shellcheck disable=SC2016  # dpkg-query's format, not a shell expansion
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) != installed ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        log "installing on the host: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    if ((EMULATED)) && [[ ! -x $QEMU ]]; then
        die "$QEMU is missing although qemu-user-static is installed"
    fi
}

BINFMT=/proc/sys/fs/binfmt_misc
BINFMT_MOUNTED_HERE=0
BINFMT_ENTRY=""

# aarch64 ELF executables and shared objects (e_ident, e_type, e_machine = 0xb7), the magic and
# mask QEMU's own scripts/qemu-binfmt-conf.sh use.
AARCH64_MAGIC='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
AARCH64_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

# Register our own binfmt entry, named after this process, at the head of the kernel's list
# (the newest entry is matched first, so an existing qemu-aarch64 entry without F cannot get in
# the way). F: the kernel opens $QEMU now, so the chroot needs no copy of it at that path.
register_binfmt() {
    if ! mountpoint -q "$BINFMT"; then
        mount -t binfmt_misc binfmt_misc "$BINFMT" ||
            die "cannot mount binfmt_misc on $BINFMT: this lane needs it to run aarch64 programs (see the comment at the end of this script)"
        BINFMT_MOUNTED_HERE=1
    fi
    [[ $(cat "$BINFMT/status") == enabled ]] || die "binfmt_misc is disabled on this host ($BINFMT/status)"
    # Entries left by lanes that were killed before they could clean up.
    local entry pid
    for entry in "$BINFMT"/pricefeed-lane-*; do
        [[ -e $entry ]] || continue
        pid=${entry##*-}
        if ! kill -0 "$pid" 2>/dev/null; then
            log "removing the stale binfmt entry ${entry##*/}"
            echo -1 >"$entry" || true
        fi
    done
    BINFMT_ENTRY=pricefeed-lane-$$
    printf ':%s:M::%s:%s:%s:F\n' "$BINFMT_ENTRY" "$AARCH64_MAGIC" "$AARCH64_MASK" "$QEMU" >"$BINFMT/register" ||
        die "cannot register $QEMU with binfmt_misc (see the comment at the end of this script)"
}

# shellcheck disable=SC2329  # run by the EXIT trap
host_cleanup() {
    if [[ -n $BINFMT_ENTRY && -e $BINFMT/$BINFMT_ENTRY ]]; then
        echo -1 >"$BINFMT/$BINFMT_ENTRY" || log "warning: could not remove binfmt entry $BINFMT_ENTRY"
    fi
    if ((BINFMT_MOUNTED_HERE)); then
        umount "$BINFMT" || log "warning: could not unmount $BINFMT"
    fi
}

host_main() {
    (($# >= 1)) || usage
    [[ $1 != -h && $1 != --help ]] || usage
    ((EUID == 0)) || die "must run as root (debootstrap, chroot, mount, binfmt_misc)"
    [[ $(uname -m) == x86_64 ]] || log "warning: untested host $(uname -m)"
    local dir
    dir=$(readlink -m "$1")
    case "$dir/" in
        "$SRC"/*) die "DIR must be outside the project ($SRC): the copy of the project would include it" ;;
        / | /usr/ | /etc/ | /tmp/ | /root/) die "refusing DIR=$dir" ;;
    esac
    shift

    set -E
    trap 'setup_failed $LINENO $?' ERR
    trap host_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ensure_host_packages
    if ((EMULATED)); then
        register_binfmt
    fi
    trap - ERR

    # Everything else runs in a new mount namespace (private propagation: no mount made there
    # reaches the host, and all of them go away with it, even after a kill -9) and a new pid
    # namespace (every process the suite leaves behind is killed when the lane ends).
    # unshare blocks INT and TERM while it waits, so ours are passed to its child, the inner
    # script (pid 1 of the new namespace), as TERM: it unmounts, and its namespace ends.
    # --kill-child: should unshare itself be killed, the inner script is sent TERM too.
    local rc=0
    LANE_INNER=1 LANE_DIR=$dir \
        unshare --mount --pid --fork --propagation private --kill-child=TERM -- bash "$SCRIPT" "$@" &
    LANE_UNSHARE=$!
    trap 'forward_term; exit 130' INT
    trap 'forward_term; exit 143' TERM
    while :; do
        wait "$LANE_UNSHARE" && rc=0 || rc=$?
        kill -0 "$LANE_UNSHARE" 2>/dev/null || break   # still running: a trap cut wait short
    done
    exit "$rc"
}

LANE_UNSHARE=""

# shellcheck disable=SC2329  # run by the INT and TERM traps
forward_term() {
    local inner
    [[ -n $LANE_UNSHARE ]] || return 0
    inner=$(pgrep -P "$LANE_UNSHARE" || true)   # unshare's child, by parent pid
    if [[ -n $inner ]]; then
        log "stopping the lane (pid $inner)"
        kill -TERM "$inner" 2>/dev/null || true
        # Give it time to unmount before our EXIT trap removes the binfmt entry.
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$LANE_UNSHARE" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

# ---------------------------------------------------------------------------------------------
# Inside the namespaces: the root, the mounts, the project, the suite.
# ---------------------------------------------------------------------------------------------

MOUNTS=()   # what we mounted, in order; unmounted in reverse
HOST_CA=/etc/ssl/lane-host-ca.pem   # in the root: a copy of the CA bundle the host's pip uses

mnt() {   # mnt TARGET mount-args...: mount and remember
    local target=$1
    shift
    mount "$@" "$target"
    MOUNTS+=("$target")
}

# Processes still running with DIR as their root (suite leftovers): ours, killed by pid, so
# that the unmounts are not refused as busy. DIR/proc is this pid namespace's /proc.
kill_leftovers() {
    local p root pids=()
    [[ -d $DIR/proc/self ]] || return 0
    for p in "$DIR"/proc/[0-9]*; do
        root=$(readlink "$p/root" 2>/dev/null) || continue
        [[ $root == "$DIR" ]] && pids+=("${p##*/}")
    done
    if ((${#pids[@]})); then
        log "killing processes left in the root: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        local i alive
        for ((i = 0; i < 50; i++)); do   # up to 5 s for them to go
            alive=0
            for p in "${pids[@]}"; do
                if [[ -e $DIR/proc/$p ]]; then alive=1; fi
            done
            ((alive)) || break
            sleep 0.1
        done
    fi
}

unmount_all() {
    kill_leftovers
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || {
            log "warning: ${MOUNTS[i]} busy, detaching it lazily"
            umount -l "${MOUNTS[i]}" || log "warning: could not unmount ${MOUNTS[i]}"
        }
    done
    MOUNTS=()
}

# The root bound on itself; /proc; a private /dev (a tmpfs with the usual device nodes bound
# from the host's, its own devpts, and a fresh tmpfs on /dev/shm for the feeds); a fresh /tmp.
# The host's /dev and /dev/shm are never bound into the root, so nothing the suite does there
# can touch them.
mount_root() {
    local n
    # The root a mount point of its own: `unshare -m` in the chroot (tests/processes/test_environment.py)
    # must change the propagation of "/", which only a mount point has.
    mnt "$DIR" --bind "$DIR"
    mnt "$DIR/proc" -t proc proc
    mnt "$DIR/dev" -t tmpfs -o mode=0755,nosuid,size=64k lane-dev
    for n in null zero full random urandom tty; do
        : >"$DIR/dev/$n"
        mnt "$DIR/dev/$n" --bind "/dev/$n"
    done
    mkdir -p "$DIR/dev/pts" "$DIR/dev/shm"
    mnt "$DIR/dev/pts" -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts
    ln -s pts/ptmx "$DIR/dev/ptmx"
    ln -s /proc/self/fd "$DIR/dev/fd"
    ln -s /proc/self/fd/0 "$DIR/dev/stdin"
    ln -s /proc/self/fd/1 "$DIR/dev/stdout"
    ln -s /proc/self/fd/2 "$DIR/dev/stderr"
    mnt "$DIR/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev lane-shm
    mnt "$DIR/tmp" -t tmpfs -o mode=1777,nosuid,nodev lane-tmp
    # Name resolution for apt and pip, as the host has it.
    cp -L /etc/resolv.conf "$DIR/etc/resolv.conf"
    # The CAs the host's pip trusts (a TLS-intercepting proxy's own CA among them, where there
    # is one): pip in the root is given the same bundle.
    local ca
    for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" /etc/ssl/certs/ca-certificates.crt; do
        if [[ -n $ca && -f $ca ]]; then
            cp -L "$ca" "$DIR$HOST_CA"
            break
        fi
    done
}

# Run a command in the root with a clean environment (PRICEFEED_* passed through) and the
# default action for SIGINT (see interruptible).
in_root() {
    local env=(HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive
        "PATH=$LANE/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=120)
    [[ ! -f $DIR$HOST_CA ]] || env+=("PIP_CERT=$HOST_CA")
    # pricefeed's switches, and the host's proxy and package index settings, if any.
    local v
    while IFS= read -r v; do env+=("$v"); done < <(
        env | grep -E '^(PRICEFEED_[A-Z_]*|https?_proxy|no_proxy|HTTPS?_PROXY|NO_PROXY|PIP_INDEX_URL|PIP_TRUSTED_HOST)=' || true
    )
    chroot "$DIR" /usr/bin/env -i --default-signal=INT "${env[@]}" "$@"
}

# The first URI of an enabled "deb" source for suite $1 with component main, from this
# machine's apt configuration (one-line and deb822 formats), or LANE_MIRROR.
apt_uri() {
    local suite=$1 f
    if [[ -n ${LANE_MIRROR:-} && $suite == "$SUITE" ]]; then
        echo "$LANE_MIRROR"
        return
    fi
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk -v s="$suite" '
            /^[ \t]*deb[ \t]/ {
                line = $0; sub(/#.*/, "", line); sub(/^[ \t]*deb[ \t]+/, "", line)
                if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
                n = split(line, w, /[ \t]+/)
                if (w[2] == s) for (i = 3; i <= n; i++) if (w[i] == "main") { print w[1]; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v s="$suite" '
            function has(list, word,   n, i, w) {
                n = split(list, w, /[ \t]+/)
                for (i = 1; i <= n; i++) if (w[i] == word) return 1
                return 0
            }
            BEGIN { RS = ""; FS = "\n" }
            {
                delete f
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^#/ || $i !~ /^[A-Za-z-]+:/) continue
                    key = tolower($i); sub(/:.*/, "", key)
                    val = $i; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
                    f[key] = val
                }
                if (has(f["types"], "deb") && has(f["suites"], s) && has(f["components"], "main") \
                    && tolower(f["enabled"]) != "no") {
                    split(f["uris"], u, /[ \t]+/); print u[1]; exit
                }
            }' "$f"
    done
}

mirror() {
    local uri
    uri=$(apt_uri "$SUITE" | head -n1)
    [[ -n $uri ]] || die "no Debian '$SUITE main' source in /etc/apt/sources.list{,.d/*}; set LANE_MIRROR"
    echo "${uri%/}"
}

# The root's apt sources: the suite, and its -updates and -security where the host has them.
write_root_sources() {
    local main uri suite lines
    main=$(mirror)
    lines=("# written by aarch64-lane.sh from the host's apt sources" "deb $main $SUITE main")
    for suite in "$SUITE-updates" "$SUITE-security"; do
        uri=$(apt_uri "$suite" | head -n1)
        if [[ -n $uri ]]; then
            lines+=("deb ${uri%/} $suite main")
        fi
    done
    printf '%s\n' "${lines[@]}" >"$DIR/etc/apt/sources.list"
    rm -f "$DIR"/etc/apt/sources.list.d/*.sources "$DIR"/etc/apt/sources.list.d/*.list
}

# True when DIR is empty but for our own marker.
dir_is_fresh() {
    [[ -z $(find "$DIR" -mindepth 1 -maxdepth 1 ! -name "$OWNED" -print -quit) ]]
}

build_root() {
    local t0 t
    if [[ -f $DIR/$DONE ]]; then
        log "reusing the arm64 root in $DIR (built $(cat "$DIR/$DONE"))"
        return
    fi
    if ! dir_is_fresh; then
        # A root of ours that did not finish (debootstrap cannot resume): start again.
        [[ -f $DIR/$OWNED ]] || die "$DIR is not empty and is not an arm64 lane root: refusing to touch it"
        [[ -z $(findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0 "/", d) == 1') ]] ||
            die "something is mounted under $DIR: refusing to wipe it"
        log "wiping the unfinished root in $DIR"
        find "$DIR" -mindepth 1 -maxdepth 1 ! -name "$OWNED" -exec rm -rf {} +
    fi
    local uri keyring=()
    uri=$(mirror)
    [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
        keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    t0=$(now)

    log "debootstrap stage 1 ($SUITE, $ARCH, mirror from the host's apt sources)"
    t=$(now)
    interruptible debootstrap --arch="$ARCH" --foreign --variant=minbase --include=ca-certificates \
        "${keyring[@]}" "$SUITE" "$DIR" "$uri" >&2
    timing "debootstrap stage 1 (download, unpack)" "$t"

    # Not needed with binfmt's F flag, but it lets `chroot DIR qemu-aarch64-static ...` work.
    if ((EMULATED)); then
        install -m 0755 "$QEMU" "$DIR/usr/bin/qemu-aarch64-static"
    fi

    log "debootstrap stage 2, under qemu"
    t=$(now)
    interruptible chroot "$DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        /debootstrap/debootstrap --second-stage >&2
    timing "debootstrap stage 2 (under qemu)" "$t"

    log "apt: ${PACKAGES[*]}"
    t=$(now)
    write_root_sources
    mount_root
    interruptible in_root apt-get update -qq >&2
    interruptible in_root apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
    in_root apt-get clean
    unmount_all
    timing "apt-get install in the root (under qemu)" "$t"

    timing "root build, total" "$t0"
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) in $(since "$t0") s" >"$DIR/$DONE"
}

# On a reused root: add what the package list gained since (LANE_EXTRA_PACKAGES).
ensure_root_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        # shellcheck disable=SC2016  # dpkg-query's format, not a shell expansion
        [[ $(in_root dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) == installed ]] ||
            missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "apt: adding ${missing[*]}"
        write_root_sources
        interruptible in_root apt-get update -qq >&2
        interruptible in_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
        in_root apt-get clean
    fi
}

# The project, as a fresh copy: build output and compiled extensions of this host are left
# out, so pip builds the accelerator for aarch64.
copy_project() {
    rm -rf "$DIR$LANE/src"
    mkdir -p "$DIR$LANE/src"
    tar -C "$SRC" -cf - \
        --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude='*.so' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
        --exclude=.mypy_cache --exclude=.ruff_cache --exclude=./.venv --exclude=./venv . |
        tar -C "$DIR$LANE/src" -xf -
}

install_project() {
    local t
    t=$(now)
    [[ -x $DIR$LANE/venv/bin/python ]] || in_root python3 -m venv "$LANE/venv"
    interruptible in_root sh -c "cd $LANE/src && python -m pip install -q -e '.[test]'" >&2
    timing "pip install -e '.[test]'" "$t"
}

# What this lane proves, printed before the suite runs.
FACTS=$(
    cat <<'PY'
import ctypes, errno, os, platform, sys, uuid

from pricefeed import Publisher, Subscriber
from pricefeed import _protocol
from pricefeed._protocol import accel as _accel, ordering as _ordering
from pricefeed._protocol import reader as _reader, writer as _writer
from pricefeed._wait import _futex_linux as fx

def where(addr):
    """The file mapped at addr, from /proc/self/maps."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi and len(parts) >= 6:
                return parts[5]
    return "?"

def elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    return {183: "aarch64", 62: "x86-64"}.get(int.from_bytes(head[18:20], "little"), "other")

mode = "pure Python (PRICEFEED_PURE)" if os.environ.get("PRICEFEED_PURE") else "default"
print(f"--- facts, {mode} ---")
print(f"platform.machine()       {platform.machine()}  (python {platform.python_version()}, {sys.executable})")
print(f"ordering.FENCES          {_ordering.FENCES}")
# The C function behind fence_acquire: itself, or one its closure holds.
acq = _ordering.fence_acquire
cells = [c.cell_contents for c in getattr(acq, "__closure__", None) or ()]
fn = next((c for c in [acq, *cells] if isinstance(c, ctypes._CFuncPtr)), None)
if fn is not None:
    addr = ctypes.cast(fn, ctypes.c_void_p).value
    print(f"fence_acquire calls      {fn.__name__} at {addr:#x}, in {where(addr)}")
else:
    print(f"fence_acquire is         {getattr(acq, '__qualname__', acq)} (no C function behind it)")

# Count the fences the hot paths take: one publish and one read through the real classes.
counts = {"acquire": 0, "release": 0}
real_acq, real_rel = _reader.fence_acquire, _writer.fence_release
def counting(kind, real):
    def f():
        counts[kind] += 1
        real()
    return f
_reader.fence_acquire, _writer.fence_release = counting("acquire", real_acq), counting("release", real_rel)
name = f"lanefacts{os.getpid()}{uuid.uuid4().hex[:6]}"
try:
    with Publisher.create(name) as pub:
        pub.publish("A", 1.5)
        pub.publish_many({"A": 2.5, "B": 3.5})
        with Subscriber(name) as sub:
            assert sub.get("A").price == 2.5 and sub.get("B").price == 3.5
finally:
    _reader.fence_acquire, _writer.fence_release = real_acq, real_rel
    try:
        import posix_ipc
        from pricefeed._segment import segment_name
        posix_ipc.unlink_shared_memory(segment_name(name))
    except Exception:
        pass
print(f"fences taken in Python   {counts['acquire']} acquire, {counts['release']} release"
      f"  (create, 3 changes, 2 reads)")

print(f"futex syscall number     {fx._NR}  (backend usable: {fx.BACKEND.usable()})")
fx._syscall(fx._SYS_FUTEX_WAITV, None, 0, 0, None, 0)
e = ctypes.get_errno()
print(f"futex_waitv ({fx._SYS_FUTEX_WAITV})        {'works' if e == errno.EINVAL else 'unavailable'}"
      f"  (empty probe: {errno.errorcode.get(e, e)}; kernel {platform.release()})")
print(f"protocol implementation  {_protocol.implementation().name}", end="")
if _protocol.implementation().name == "c":
    so = _accel._speedups.__file__
    print(f"  ({os.path.basename(so)}, ELF {elf_machine(so)})")
else:
    print()
PY
)

SUMMARY=()   # printed again at the end: the facts and the timings

print_facts() {
    local out so
    out=$(in_root sh -c "cd $LANE/src && python -c \"\$1\"" facts "$FACTS")
    # The accelerator's fences, as compiled: __atomic_thread_fence(ACQUIRE) is `dmb ishld` on
    # aarch64, RELEASE `dmb ish` (on x86-64 both are nothing at all).
    so=$(cd "$DIR$LANE/src/pricefeed/_protocol" && compgen -G '_speedups*.so' | head -n1 || true)
    if [[ -n $so ]]; then
        out+=$'\n'$(in_root objdump -d "$LANE/src/pricefeed/_protocol/$so" | awk -v so="$so" '
            $0 ~ /\tdmb\tishld/ { ld++; next } $0 ~ /\tdmb\tish/ { st++ }
            END { printf "accelerator as built     %d dmb ishld (acquire), %d dmb ish (release) in %s", ld, st, so }')
    fi
    if [[ -z ${PRICEFEED_PURE:-} ]]; then
        out+=$'\n'$(in_root sh -c "cd $LANE/src && PRICEFEED_PURE=1 python -c \"\$1\"" facts "$FACTS")
    fi
    printf '%s\n' "$out"
    SUMMARY+=("$out")
}

# shellcheck disable=SC2329  # run by the EXIT trap
inner_cleanup() {
    unmount_all
}

inner_main() {
    DIR=$LANE_DIR
    mkdir -p "$DIR"
    # One lane per DIR at a time: a lock on the directory itself, so nothing is written into
    # a DIR that turns out not to be ours.
    exec 9<"$DIR"
    flock -n 9 || die "another lane is using $DIR"
    if dir_is_fresh; then : >"$DIR/$OWNED"; fi
    set -E
    trap 'setup_failed $LINENO $?' ERR
    trap inner_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local t rc
    t=$(now)
    build_root
    timing "root ready" "$t"

    mount_root
    ensure_root_packages
    copy_project
    install_project
    print_facts

    trap - ERR
    local args=("$@")
    ((${#args[@]})) || args=(-q)
    log "python -m pytest ${args[*]}"
    t=$(now)
    rc=0
    interruptible in_root sh -c "cd $LANE/src && exec python -m pytest \"\$@\"" pytest "${args[@]}" || rc=$?
    SUMMARY+=("--- timings ---" "${TIMINGS[@]}" "pytest ${args[*]}: $(since "$t") s, exit code $rc")
    if ((rc == 5)); then
        SUMMARY+=("pytest ran no tests: that is a failure here")
    fi
    printf '%s\n' "" "=== aarch64 lane summary ===" "${SUMMARY[@]}"
    exit "$rc"
}

if [[ -n ${LANE_INNER:-} ]]; then
    inner_main "$@"
else
    host_main "$@"
fi

# Without binfmt_misc (a container that may not mount it or write its register file), none of
# this works as is: the second stage of debootstrap, apt, gcc and every subprocess of the suite
# execute aarch64 programs, and qemu-user (7.2) does not intercept execve to emulate the child.
# The way out there is to have the host register qemu-aarch64 once, with the F flag, for every
# container (`update-binfmts --enable qemu-aarch64` with binfmt-support, or systemd-binfmt),
# or a full-system VM (qemu-system-aarch64), which would also give the guest aarch64's own
# memory ordering.
