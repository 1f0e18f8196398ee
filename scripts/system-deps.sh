#!/bin/sh
# Installs the Debian packages the tests use, when missing: Dovecot (real IMAP server),
# Chromium (dashboard browser test) and systemd (systemd-analyze for the unit checks).
# As root it runs apt-get; otherwise it says exactly what to install.
set -eu
missing=""
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing="$missing dovecot-imapd"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "The tests need these Debian packages:$missing"
    echo "Install them with: sudo apt-get update && sudo apt-get install -y$missing"
    echo "(tests that need a missing one are skipped with that reason)"
fi
