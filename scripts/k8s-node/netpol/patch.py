"""kube-network-policies for this node (scripts/k8s-node.sh build_netpol), in a copy of the module:
cmd/main.go reads $KUBECONFIG (a host process, not a pod), and the nfqueue verdicts use the
xtables compat target (xtqueue.go) instead of nftables' native queue statement."""
import sys
from pathlib import Path

root = Path(sys.argv[1])


def patch(rel, pairs):
    path = root / rel
    text = path.read_text()
    for old, new in pairs:
        if text.count(old) < 1:
            sys.exit(f"kube-network-policies: {rel} is not as expected (no {old!r})")
        text = text.replace(old, new)
    path.write_text(text)


patch("cmd/main.go", [
    ("config, err := rest.InClusterConfig()", 'config, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))'),
    ('\t"k8s.io/client-go/rest"\n', '\t"k8s.io/client-go/tools/clientcmd"\n'),
])
patch("pkg/networkpolicy/controller.go", [
    ("queue := &expr.Queue{Num: uint16(c.config.QueueID)}\n\tif c.config.FailOpen {\n\t\tqueue.Flag = expr.QueueFlagBypass\n\t}",
     "queue := xtQueue(uint16(c.config.QueueID), c.config.FailOpen)"),
])
patch("pkg/networkpolicy/dnsagent.go", [
    ("&expr.Queue{Num: uint16(n.nfQueueID), Flag: expr.QueueFlagBypass}", "xtQueue(uint16(n.nfQueueID), true)"),
])
(root / "pkg/networkpolicy/xtqueue.go").write_text((Path(__file__).parent / "xtqueue.go").read_text())
