#!/bin/bash
alias e="etcdctl"
alias em="etcdctl member"
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS="https://10.10.10.21:2379,https://10.10.10.22:2379,https://10.10.10.23:2379,https://10.10.10.24:2379,https://10.10.10.25:2379"
export ETCDCTL_CACERT=/etc/pki/ca.crt
export ETCDCTL_CERT=/etc/etcd/server.crt
export ETCDCTL_KEY=/etc/etcd/server.key
