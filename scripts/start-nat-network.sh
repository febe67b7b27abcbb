#!/usr/bin/env bash
# Define and start the libvirt NAT network the demo and the tests give their desktops
# (`vdi-nat`: a bridge of its own with DHCP from libvirt's dnsmasq, NAT to the host's uplinks).
# Safe to run again: an existing network is started if it is down and otherwise left alone.
#
#   VDI_NAT_NETWORK  its name and its bridge's name   (default vdi-nat)
#   VDI_NAT_SUBNET   a private /24 this machine does not route yet (default 10.213.17.0/24);
#                    the gateway (the host's own address on the bridge) is .1, DHCP hands out .10-.250
set -euo pipefail

NAME="${VDI_NAT_NETWORK:-vdi-nat}"
SUBNET="${VDI_NAT_SUBNET:-10.213.17.0/24}"
URI="${VDI_LIBVIRT_URI:-qemu:///system}"
virsh=(virsh -q -c "$URI")

if info="$("${virsh[@]}" net-info "$NAME" 2>/dev/null)"; then
  if ! grep -Eq '^Active:\s+yes' <<<"$info"; then
    "${virsh[@]}" net-start "$NAME" >/dev/null
  fi
  "${virsh[@]}" net-autostart "$NAME" >/dev/null
  exit 0
fi

case "$SUBNET" in
  *.0/24) prefix="${SUBNET%.0/24}" ;;
  *) echo "VDI_NAT_SUBNET must be a /24 ending in .0/24, e.g. 10.213.17.0/24 (got $SUBNET)" >&2; exit 1 ;;
esac
gateway="$prefix.1"
# Never shadow a network this machine already reaches (its LAN, a VPN, a container bridge).
if ip -4 route show to match "$gateway" | grep -v '^default ' | grep -q .; then
  echo "$SUBNET is already routed on this machine:" >&2
  ip -4 route show to match "$gateway" | grep -v '^default ' >&2
  echo "choose a free /24 with VDI_NAT_SUBNET=10.x.y.0/24" >&2
  exit 1
fi

xml="$(mktemp)"
trap 'rm -f "$xml"' EXIT
cat > "$xml" <<XML
<network>
  <name>$NAME</name>
  <forward mode='nat'/>
  <bridge name='$NAME' stp='off' delay='0'/>
  <ip address='$gateway' netmask='255.255.255.0'>
    <dhcp>
      <range start='$prefix.10' end='$prefix.250'/>
    </dhcp>
  </ip>
</network>
XML
"${virsh[@]}" net-define "$xml" >/dev/null
"${virsh[@]}" net-start "$NAME" >/dev/null
"${virsh[@]}" net-autostart "$NAME" >/dev/null
echo "libvirt network $NAME: $SUBNET, gateway $gateway, DHCP $prefix.10-$prefix.250"
