// Added to kube-network-policies' pkg/networkpolicy by scripts/k8s-node.sh (build_netpol).
//
// The kernel of the project's build machines has no nft_queue (nftables' native `queue`
// statement: "No such file or directory" from netlink) but does have xt_NFQUEUE, which nftables
// reaches through its xtables compat expression. The packets go to the same nfqueue either way;
// only the rule's verdict expression differs.
package networkpolicy

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// xtQueue is `-j NFQUEUE --queue-num num [--queue-bypass]` (struct xt_NFQ_info_v3: queuenum,
// queues_total, flags; NFQ_FLAG_BYPASS = 1), padded to the kernel's xtables alignment.
func xtQueue(num uint16, bypass bool) *expr.Target {
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	if bypass {
		binary.NativeEndian.PutUint16(info[4:], 1)
	}
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}
