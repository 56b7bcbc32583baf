#!/usr/bin/env bash
# Install Debian packages a test target needs, once: apt_install.sh <command> <package>...
# Does nothing when <command> is already there (on PATH or in PostgreSQL's versioned bin
# folder). Otherwise installs <package>... with apt-get, as root or through `sudo -n` (never
# a password prompt: CI has no one to type it). Where that is impossible (no apt-get, not
# root and no password-less sudo, apt-get failing) it says so in one line on stderr and
# exits 1: a target such as make test-browser then stops instead of its tests skipping.
set -u
need=$1
shift
found() {
  command -v "$need" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$need" >/dev/null
}
fail() {
  local why=$1
  shift
  echo "make: $need is missing and $why; install it by hand: apt-get install $*" >&2
  exit 1
}
found && exit 0
command -v apt-get >/dev/null 2>&1 || fail "this system has no apt-get" "$@"
as_root=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || fail "this user is not root and there is no sudo" "$@"
  sudo -n true 2>/dev/null || fail "sudo needs a password here" "$@"
  as_root=(sudo -n)
fi
echo "make: installing $* (Debian packages, for $need)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -qq &&
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1; then
  reason=$(grep -E '^(E|Err):' "$log" | tail -n 1)
  fail "apt-get failed (${reason:-$(tail -n 1 "$log")})" "$@"
fi
found || fail "installing $* did not provide it" "$@"
