#!/usr/bin/env bash
# Install Debian packages a test target needs, once: apt_install.sh <command> <package>...
# Does nothing when <command> is already there (on PATH or in PostgreSQL's versioned bin
# folder). Where installing is impossible (not root, no apt-get, no network) it says so
# and exits 0: the tests that need <command> then skip, each with the reason.
set -u
need=$1
shift
if command -v "$need" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$need" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make: $need is missing and can't be installed here (needs root and apt-get):" \
    "apt-get install $*; the tests that need it will skip" >&2
  exit 0
fi
echo "make: installing $* (Debian packages, for $need)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }; then
  echo "make: apt-get install $* failed; the tests that need $need will skip" >&2
fi
exit 0
