#!/bin/bash
# XDP decap on a real driver, functionally: a qemu guest (TCG; virtme-ng on the host's
# own userspace) whose virtio_net NIC is weft's uplink, against a node configured as
# Flannel's vxlan backend configures one (kernel flannel.1) in network namespace
# weft-gh, on the other end of the guest's tap. Checks that `--decap auto` attaches
# XDP natively, that a transfer from the Flannel node's pod arrives intact in the
# guest's pod, and that GRO aggregated what XDP decapsulated. Nothing is created in
# the root namespace. Throughput under TCG measures the emulator, not weft.
#
# Needs: cargo xtask build; apt-get install qemu-system-x86 busybox-static
# linux-image-6.12.107+deb12-amd64 (or KERNEL=/boot/vmlinuz-...); virtme-ng 1.42 in
# a venv (VNG_BIN=/opt/vng/bin). Usage: tests/guest/virtio-xdp.sh
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VNG_BIN=${VNG_BIN:-/opt/vng/bin}
KERNEL=${KERNEL:-/boot/vmlinuz-6.12.107+deb12-amd64}
for need in "$VNG_BIN/vng" "$KERNEL" /usr/bin/qemu-system-x86_64 "$ROOT/target/debug/weft-agent"; do
  [ -e "$need" ] || { echo "missing $need (see the header of $0)"; exit 2; }
done
R=$(mktemp -d /tmp/weft-guest.XXXXXX)
cleanup() { ip netns pids weft-gh 2>/dev/null | xargs -r kill 2>/dev/null; sleep 1; ip netns del weft-ghpod 2>/dev/null; ip netns del weft-gh 2>/dev/null; }
trap cleanup EXIT
cleanup
set -e
ip netns add weft-gh; ip netns add weft-ghpod
ip -n weft-gh link set lo up
ip -n weft-gh tuntap add tap0 mode tap
ip -n weft-gh addr add 192.168.77.1/24 dev tap0
ip -n weft-gh link set tap0 up
ip netns exec weft-gh sysctl -qw net.ipv4.ip_forward=1
ip -n weft-gh link add flannel.1 type vxlan id 1 local 192.168.77.1 dev tap0 dstport 8472 nolearning
ip -n weft-gh link set flannel.1 address 0a:58:0a:f4:01:00 mtu 1450 up
ip -n weft-gh addr add 10.244.1.0/32 dev flannel.1
ip -n weft-gh link add cni0 type bridge
ip -n weft-gh addr add 10.244.1.1/24 dev cni0
ip -n weft-gh link set cni0 up
ip -n weft-gh link add vethh mtu 1450 type veth peer name eth0 netns weft-ghpod
ip -n weft-gh link set vethh master cni0 up
ip -n weft-ghpod link set lo up
ip -n weft-ghpod link set eth0 mtu 1450
ip -n weft-ghpod addr add 10.244.1.2/24 dev eth0
ip -n weft-ghpod link set eth0 up
ip -n weft-ghpod route add default via 10.244.1.1
ip -n weft-gh neigh replace 10.244.2.0 lladdr 0a:58:0a:f4:02:00 dev flannel.1 nud permanent
bridge -n weft-gh fdb replace 0a:58:0a:f4:02:00 dev flannel.1 dst 192.168.77.2 self permanent
ip -n weft-gh route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
set +e
timeout 400 ip netns exec weft-gh env PATH=$VNG_BIN:$PATH vng --run $KERNEL --disable-kvm --cpus 2 --memory 2G \
  --rwdir $R \
  --qemu-opts="-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0" \
  --exec "$HERE/inside.sh $R $ROOT" </dev/null >$R/vng.out 2>$R/vng.err &
VNG=$!
for i in $(seq 1 300); do [ -e $R/guest-ready ] && break; kill -0 $VNG 2>/dev/null || break; sleep 1; done
[ -e $R/guest-ready ] || { echo "guest never ready"; tail -20 $R/vng.err; tail -30 $R/guest.log 2>/dev/null; exit 1; }
sleep 1
ip netns exec weft-ghpod timeout 120 python3 $HERE/send.py 10.244.2.2 5001 ${BYTES:-50000000} | tee $R/send.txt
wait $VNG
echo "--- guest"; cat $R/guest.log
echo "--- sent / received"; cat $R/send.txt $R/recv.txt
python3 - "$R" <<'PY'
import json, sys
r = sys.argv[1]
sent, recv = open(f"{r}/send.txt").read().split(), open(f"{r}/recv.txt").read().split()
log = open(f"{r}/guest.log").read()
counters = {}
names = ["passed", "encapsulated", "decapsulated", "drop_no_tunnel", "drop_unknown_peer", "drop_malformed",
         "drop_not_ipv4", "drop_no_config", "drop_resize", "drop_redirect", "drop_ecn_not_ect", "delivered_from_xdp",
         "drop_xdp_mark_lost", "fast_encapsulated", "fast_delivered", "bridge_bypassed"]
for e in json.load(open(f"{r}/counters.json")):
    f = e["formatted"]
    counters[names[f["key"]] if f["key"] < len(names) else f["key"]] = sum(v["value"]["packets"] for v in f["values"])
print("counters:", {k: v for k, v in counters.items() if v})
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok &= cond
check("prog/xdp id" in log and "xdpgeneric" not in log, "XDP attached natively on virtio_net by --decap auto")
check(sent == recv and int(sent[0]) > 0, f"transfer intact ({recv[0] if recv else 0} bytes, sha256 equal)")
dec, agg = counters.get("decapsulated", 0), counters.get("delivered_from_xdp", 0)
check(agg > 0 and dec >= 4 * agg, f"GRO aggregated what XDP decapsulated: {dec} frames in {agg} aggregates")
drops = {k: v for k, v in counters.items() if str(k).startswith("drop_") and v}
check(not drops, f"no drops {drops}")
sys.exit(0 if ok else 1)
PY
