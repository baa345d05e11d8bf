# The local cluster's names and addresses, sourced by up.sh and down.sh (one place for both).
#
# Every name derives from the slurmctld port, so two clusters on one host (two ports) never share a namespace,
# an interface or a subnet:
#   nodes      node1 .. nodeN  (N = CIRCLES_SLURM_NODES, default 2), each in network + UTS namespace circlesPORT-nI
#   bridge     circlesPORT in this host's network namespace, 10.77.(PORT % 250).1/24 (slurmctld's address)
#   node I     10.77.(PORT % 250).(10 + I) on veth cPORTnI (host side) / eth0 (node side)
#   hosts      STATE/etc/hosts: each slurmd sees it as /etc/hosts (its own mount namespace)
PORT=${CIRCLES_SLURM_PORT:-6817}
NODES=${CIRCLES_SLURM_NODES:-2}
[[ $PORT =~ ^[0-9]+$ ]] && (( PORT >= 1024 && PORT <= 65534 )) || { echo "CIRCLES_SLURM_PORT must be 1024..65534, got '$PORT'" >&2; exit 2; }
[[ $NODES =~ ^[0-9]+$ ]] && (( NODES >= 1 && NODES <= 9 )) || { echo "CIRCLES_SLURM_NODES must be 1..9, got '$NODES'" >&2; exit 2; }
NET=circles$PORT                      # bridge name and namespace prefix (15 characters at most)
SUBNET=10.77.$(( PORT % 250 ))
CTL_ADDR=$SUBNET.1
node_name() { echo "node$1"; }
node_ns() { echo "$NET-n$1"; }
node_addr() { echo "$SUBNET.$(( 10 + $1 ))"; }
node_veth() { echo "c${PORT}n$1"; }
