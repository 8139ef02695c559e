#!/usr/bin/env bash
# install.sh: builds the release binaries and installs loopd, loopctl and bin/loop into a prefix
# (default ~/.local/bin). `--systemd` also writes a systemd user unit for loopd.
set -euo pipefail
cd "$(dirname "$0")"

prefix="${HOME}/.local/bin"
systemd=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --systemd) systemd=1; shift ;;
    -h|--help)
      echo "usage: ./install.sh [--prefix DIR] [--systemd]"
      exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cargo build --release -p loopd -p loopctl
mkdir -p "$prefix"
install -m 0755 target/release/loopd "$prefix/loopd"
install -m 0755 target/release/loopctl "$prefix/loopctl"
install -m 0755 bin/loop "$prefix/loop"
echo "installed loopd, loopctl and loop into $prefix"
case ":$PATH:" in
  *":$prefix:"*) ;;
  *) echo "note: $prefix is not on PATH; add it to use the commands by name" ;;
esac

if [ "$systemd" = 1 ]; then
  unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  mkdir -p "$unit_dir"
  cat > "$unit_dir/loopd.service" <<UNIT
[Unit]
Description=agent-loop daemon (loopd)

[Service]
ExecStart=$prefix/loopd
Restart=on-failure
# Agents get SIGINT first, then TERM, then KILL; give them time to stop.
TimeoutStopSec=30
KillMode=mixed

[Install]
WantedBy=default.target
UNIT
  echo "wrote $unit_dir/loopd.service; enable it with: systemctl --user enable --now loopd"
fi
