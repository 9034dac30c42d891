# managed by Quorum from the Pigsty inventory: local edits are overwritten
alias e="etcdctl"
alias em="etcdctl member"
export ETCDCTL_ENDPOINTS="https://10.20.0.1:12379,https://10.20.0.2:12379,https://10.20.0.3:12379"
export ETCDCTL_CACERT=/etc/pki/ca.crt
export ETCDCTL_CERT=/etc/etcd/server.crt
export ETCDCTL_KEY=/etc/etcd/server.key
