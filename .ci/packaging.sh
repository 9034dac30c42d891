#!/usr/bin/env bash
# Packaging checks, run by .ci/run: build the .deb and .rpm of quorum-agent and quorum, inspect
# their contents, metadata and scripts, and run lintian. Nothing is installed here: the host
# lab's tests install, upgrade, remove and purge the .debs on systemd-booted hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
fail() { echo "packaging: FAILED: $*" >&2; exit 1; }
apt-get install -y -qq rpm lintian >/dev/null
command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked
command -v cargo-generate-rpm >/dev/null || cargo install cargo-generate-rpm --version 0.21.1 --locked
rm -rf target/packages
packaging/build.sh
P=target/packages
AGENT_DEB=$(ls $P/quorum-agent_*.deb); QUORUM_DEB=$(ls $P/quorum_*.deb)
AGENT_RPM=$(ls $P/quorum-agent-*.rpm); QUORUM_RPM=$(ls $P/quorum-[0-9]*.rpm)
ls -l $P

echo "== deb contents and metadata"
# Captured once, then searched: `cmd | grep -q` would trip pipefail when grep stops early.
AGENT_LIST=$(dpkg-deb -c "$AGENT_DEB"); AGENT_INFO=$(dpkg-deb -I "$AGENT_DEB"); QUORUM_LIST=$(dpkg-deb -c "$QUORUM_DEB")
echo "$AGENT_LIST"; echo "$AGENT_INFO"
grep -q ' ./usr/bin/quorum-agent$' <<<"$AGENT_LIST" || fail "agent binary missing"
grep -E '^-rw-r--r-- .* ./etc/quorum/agent.yml$' >/dev/null <<<"$AGENT_LIST" || fail "agent.yml must be 0644"
grep -E '^-rwxr-xr-x .* ./usr/bin/quorum-agent$' >/dev/null <<<"$AGENT_LIST" || fail "agent binary must be 0755"
grep -q './lib/systemd/system/quorum-agent.service' <<<"$AGENT_LIST" || fail "agent unit missing"
grep -q './usr/share/man/man1/quorum-agent.1.gz' <<<"$AGENT_LIST" || fail "agent man page missing"
grep -q 'Depends: .*libc6' <<<"$AGENT_INFO" || fail "agent depends on libc6"
grep -qx '/etc/quorum/agent.yml' <<<"$(dpkg-deb -I "$AGENT_DEB" conffiles)" || fail "agent.yml is not a conffile"
for s in postinst prerm postrm; do dpkg-deb -I "$AGENT_DEB" $s >/dev/null || fail "agent $s missing"; done
grep -q ' ./usr/bin/quorum$' <<<"$QUORUM_LIST" || fail "quorum binary missing"
grep -q './usr/share/bash-completion/completions/quorum' <<<"$QUORUM_LIST" || fail "bash completion missing"
grep -q './usr/share/quorum/monitoring/quorum.rules.yml' <<<"$QUORUM_LIST" || fail "alert rules missing"
grep -q './usr/share/quorum/monitoring/quorum-overview.json' <<<"$QUORUM_LIST" || fail "dashboard missing"
grep -qx '/etc/quorum/coordinator.yml' <<<"$(dpkg-deb -I "$QUORUM_DEB" conffiles)" || fail "coordinator.yml is not a conffile"

echo "== rpm contents, config markings, scripts"
grep -qx /usr/bin/quorum-agent <<<"$(rpm -qlp "$AGENT_RPM")" || fail "agent rpm binary"
grep -qx /etc/quorum/agent.yml <<<"$(rpm -qp --configfiles "$AGENT_RPM")" || fail "agent.yml not %config in rpm"
grep -E '^/etc/quorum/agent.yml c?n' >/dev/null <<<"$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$AGENT_RPM")" || fail "agent.yml not %config(noreplace)"
grep -qx '/etc/quorum/agent.yml -rw-r--r--' <<<"$(rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms}\n]' "$AGENT_RPM")" || fail "agent.yml rpm mode 0644"
grep -q 'systemctl enable quorum-agent.service' <<<"$(rpm -qip --scripts "$AGENT_RPM")" || fail "agent rpm %post"
grep -qx /etc/quorum/coordinator.yml <<<"$(rpm -qp --configfiles "$QUORUM_RPM")" || fail "coordinator.yml not %config in rpm"
grep -qx /usr/share/bash-completion/completions/quorum <<<"$(rpm -qlp "$QUORUM_RPM")" || fail "rpm bash completion"

echo "== lintian (errors fail; warnings are listed in packaging/README.md)"
for deb in "$AGENT_DEB" "$QUORUM_DEB"; do
  out=$(lintian "$deb" 2>&1 || true)
  echo "$out"
  if grep -q '^E:' <<<"$out"; then fail "lintian errors in $deb"; fi
done

# Installing, upgrading, removing and purging the packages is tested where systemd runs them:
# on a lab host (tests/tests/lab.rs, the_packages_install_upgrade_remove_and_purge_on_a_systemd_host),
# never on this machine's own /etc.
echo "packaging: all checks passed"
