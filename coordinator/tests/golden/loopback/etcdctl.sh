# managed by Quorum from the Pigsty inventory: local edits are overwritten
alias e="etcdctl"
alias em="etcdctl member"
export ETCDCTL_ENDPOINTS="https://127.0.0.11:2379,https://127.0.0.12:2379,https://127.0.0.13:2379"
export ETCDCTL_CACERT=/var/tmp/quorum-test/pki/ca.crt
export ETCDCTL_CERT=/var/tmp/quorum-test/pki/server.crt
export ETCDCTL_KEY=/var/tmp/quorum-test/pki/server.key
