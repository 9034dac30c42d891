#!/bin/bash
alias e="etcdctl"
alias em="etcdctl member"
export ETCDCTL_ENDPOINTS="https://10.10.10.10:2379"
export ETCDCTL_CACERT=/etc/etcd/ca.crt
export ETCDCTL_CERT=/etc/etcd/server.crt
export ETCDCTL_KEY=/etc/etcd/server.key

case "$(id -un)" in
  root|dba)
    [ -r /etc/etcd/etcd.pass ] && export ETCDCTL_USER="root:$(cat /etc/etcd/etcd.pass)"
    ;;
esac