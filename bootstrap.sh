#!/usr/bin/env bash
# Sets this checkout up on Debian 12 and then runs one thing:
#
#   ./bootstrap.sh all-in-one [abiquo all-in-one options]   install, then start the all-in-one
#   ./bootstrap.sh test [pytest arguments]                  install, then run the whole suite
#
# Installing means: the Debian packages the mode needs (when run as root; otherwise it
# says which are missing), a virtualenv in .venv with this project and its pinned
# dependencies. Running it again installs only what changed.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
  all-in-one|test) ;;
  *) echo "usage: ./bootstrap.sh all-in-one|test [arguments]" >&2; exit 2 ;;
esac

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# -- Debian packages ----------------------------------------------------------------------
# libvirt's headers and pkg-config build libvirt-python; its library serves the test
# driver that the all-in-one's demo host runs on.
packages=(python3 python3-venv python3-dev gcc ca-certificates pkg-config libvirt-dev)
if [ "$mode" = test ]; then
  # The real services the tests use, and the tools they drive.
  packages+=(mariadb-server redis-server rabbitmq-server systemd openssl iproute2)
  packages+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils)
  packages+=(qemu-system-x86 busybox-static open-iscsi libxml2-utils)
  # A kernel with 802.1Q for the VLAN tests where the host's has none (tests/aim/vlan_guest.py):
  # UML, else QEMU (above) with a kernel package fetched by apt-get download and dpkg-deb.
  packages+=(user-mode-linux)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
fi

# -- the virtualenv -----------------------------------------------------------------------
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  say "$python is older than 3.11"; exit 1; }
[ -x .venv/bin/python ] || { say "creating .venv"; "$python" -m venv .venv; }
stamp=.venv/.abiquo-installed
want=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the project into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e '.[test]'
  echo "$want" > "$stamp"
fi

# -- and run ------------------------------------------------------------------------------
if [ "$mode" = all-in-one ]; then
  exec .venv/bin/abiquo all-in-one "$@"
fi
exec scripts/test.sh "$@"
