#!/bin/bash
alias e="etcdctl"
alias em="etcdctl member"
export ETCDCTL_ENDPOINTS="https://10.10.10.10:2379"
export ETCDCTL_CACERT=/etc/pki/ca.crt
export ETCDCTL_CERT=/etc/pki/infra.crt
export ETCDCTL_KEY=/etc/pki/infra.key
