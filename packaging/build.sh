#!/usr/bin/env bash
# Builds the release binaries and the quorum-agent and quorum packages, .deb and .rpm, into
# target/packages/. Needs cargo-deb and cargo-generate-rpm (`cargo install cargo-deb
# cargo-generate-rpm --locked`). DEB_VERSION overrides the .deb version (upgrade tests).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing; run: cargo install $tool --locked" >&2; exit 2; }
done
cargo build --release --workspace --bins
gen=target/release/packaging-gen
out=target/packages
mkdir -p "$gen" "$out"

# A man page per binary from its --help (every subcommand's help included for quorum).
manpage() { # name summary
  local name=$1 summary=$2 bin=target/release/$1
  {
    printf '.TH %s 1 "" "%s %s" "User Commands"\n' "$(echo "$name" | tr a-z A-Z)" "$name" "$("$bin" --version | awk '{print $2}')"
    printf '.SH NAME\n%s \\- %s\n.SH DESCRIPTION\n.nf\n' "$name" "$summary"
    "$bin" --help | sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./'
    if [ "$name" = quorum ]; then
      for sub in serve pki agents inventory render cluster config env service member run task completions; do
        printf '\n.SH "%s %s"\n' "$name" "$sub"
        "$bin" "$sub" --help | sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./'
      done
    fi
    printf '.fi\n.SH SEE ALSO\nREADME in /usr/share/doc/%s\n' "$( [ "$name" = quorum ] && echo quorum || echo quorum-agent )"
  } | gzip -9n > "$gen/$name.1.gz"
  gzip -dc "$gen/$name.1.gz" > "$gen/$name.1"
}
manpage quorum-agent "Quorum agent: runs etcd/Patroni/vip-manager tasks pulled from the coordinator"
manpage quorum "Quorum coordinator and operator CLI for Pigsty's etcd SOPs"
target/release/quorum completions bash > "$gen/quorum.bash"
target/release/quorum completions zsh > "$gen/_quorum"
target/release/quorum completions fish > "$gen/quorum.fish"

deb_args=()
if [ -n "${DEB_VERSION:-}" ]; then deb_args+=(--deb-version "$DEB_VERSION"); fi
# cargo-deb takes the package name, cargo-generate-rpm the member's directory.
for pkg in quorum-agent:agent quorum-coordinator:coordinator; do
  cargo deb -p "${pkg%%:*}" --no-build --no-strip "${deb_args[@]}" -o "$out/"
  cargo generate-rpm -p "${pkg##*:}" -o "$out/"
done
ls -l "$out"
