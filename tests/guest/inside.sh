#!/bin/bash
# Runs inside virtio-xdp.sh's guest: weft on the virtio_net NIC (renamed eth0) and a
# pod behind cni0. $1: results directory (shared with the host), $2: the workspace.
set -u
R=$1
HERE=$(cd "$(dirname "$0")" && pwd)
exec > >(tee $R/guest.log) 2>&1
AGENT=$2/target/debug/weft-agent
GMAC=0a:58:0a:f4:02:00
HMAC=0a:58:0a:f4:01:00
uname -r
modprobe virtio_net 2>/dev/null
sleep 1
ip -br link
NIC=$(ls /sys/class/net | grep -v -E '^(lo|sit0|tunl0)$' | head -1)
echo "NIC=$NIC"
ip link set dev $NIC name eth0
ip link set lo up
ip link set eth0 up
ip addr add 192.168.77.2/24 dev eth0
ethtool -i eth0 | head -2
cd $(mktemp -d)
cat > peers <<P
host 192.168.77.1 10.244.1.0/24 $HMAC
guest 192.168.77.2 10.244.2.0/24 $GMAC
P
# The pod: a bridge cni0 with the gateway and a veth into the pod's namespace.
ip netns add pod
ip link add cni0 type bridge
ip addr add 10.244.2.1/24 dev cni0
ip link set cni0 up
ip link add vethp type veth peer name eth0 netns pod
ip link set vethp master cni0 up
ip -n pod link set lo up
ip -n pod addr add 10.244.2.2/24 dev eth0
ip -n pod link set eth0 up
ip -n pod route add default via 10.244.2.1
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
$AGENT --peers peers --node-name guest --iface eth0 --resync-seconds 5 > $R/agent.log 2>&1 &
for i in $(seq 1 50); do grep -q 'dataplane up' $R/agent.log && break; sleep 0.2; done
sleep 2
ip -d link show eth0 | grep -o 'prog/xdp[a-z]* id [0-9]*' || echo "NO XDP ON eth0"
ip link show eth0 | grep -o 'xdp[a-z]*' | head -1
ethtool -k eth0 | grep -E 'generic-receive-offload|large-receive'
# ping the host so neighbours are known, then receive the host pod's transfer.
ip netns exec pod ping -c 2 -W 2 10.244.1.2
touch $R/guest-ready
ip netns exec pod timeout 120 python3 $HERE/recv.py 10.244.2.2 5001 > $R/recv.txt 2>&1
bpftool -j map dump pinned /sys/fs/bpf/weft/counters > $R/counters.json
cat $R/recv.txt
echo done > $R/guest-done
