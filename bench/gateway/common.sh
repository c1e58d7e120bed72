# What the gateway bench scripts share; sourced by run.sh, propagation.sh
# and roll.sh.

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until URL answers 2xx; exits the script otherwise.
wait_http() { # url
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  exit 1
}

# A throwaway single-member etcd on free loopback ports (no fsync, short
# election), started in the background and waited for. Sets etcd_port
# (its client port) and etcd_pid. Call it directly, not in $(…).
start_etcd() { # name data-dir log-file
  local peer_port
  etcd_port=$(free_port)
  peer_port=$(free_port)
  etcd --name "$1" --data-dir "$2" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "$1=http://127.0.0.1:$peer_port" --heartbeat-interval 10 --election-timeout 100 \
    --unsafe-no-fsync --log-level error --logger zap 2>"$3" &
  etcd_pid=$!
  wait_http "http://127.0.0.1:$etcd_port/health"
}
